//! The stack machine: the input read opcode by opcode, the value arena, stack, marks and memo,
//! every limit and the item budget.

use std::collections::HashMap;

use super::opcode::Opcode;
use super::{
    Global, Pickle, Value, ValueId, ITEMS_BASE, MAX_ITEMS, MAX_MEMO, MAX_STACK, MAX_STRING_BYTES,
    MAX_VALUES,
};
use crate::error::{Error, Result};

pub(super) struct Machine<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
    /// Offset of the opcode being run, for messages.
    pub(super) op_pos: usize,
    pub(super) values: Vec<Value>,
    pub(super) stack: Vec<ValueId>,
    /// Stack lengths at each MARK (Python 3's own design: marks are not stack items).
    pub(super) marks: Vec<usize>,
    pub(super) memo: HashMap<u32, ValueId>,
    /// Where each string or int key sits in its dict, so SETITEMS stays linear in the input
    /// (a linear search per key would let a large dict take quadratic time).
    pub(super) dict_keys: HashMap<(ValueId, Key), usize>,
    /// Each distinct string used as a dict key, and its id. Strings are made from the input's own
    /// bytes, so this holds at most the input's size.
    pub(super) interned: HashMap<String, u32>,
    /// The interned id of each string value already used as a key: a key reused through the memo
    /// is not hashed again.
    pub(super) interned_ids: HashMap<ValueId, u32>,
    pub(super) tensors: usize,
    /// The item budget this input gets.
    pub(super) items_allowed: usize,
    /// What is left of it.
    pub(super) items_left: usize,
}

/// A dict key that is compared (checkpoints only use strings and ints); strings by interned id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Key {
    Str(u32),
    Int(i64),
}

impl<'a> Machine<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Machine<'a> {
        Machine {
            bytes,
            pos: 0,
            op_pos: 0,
            values: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            dict_keys: HashMap::new(),
            interned: HashMap::new(),
            interned_ids: HashMap::new(),
            tensors: 0,
            items_allowed: bytes.len().saturating_add(ITEMS_BASE).min(MAX_ITEMS),
            items_left: bytes.len().saturating_add(ITEMS_BASE).min(MAX_ITEMS),
        }
    }
}

impl Machine<'_> {
    pub(super) fn fail(&self, message: impl std::fmt::Display) -> Error {
        Error::model_invalid(format!(
            "checkpoint pickle, offset {}: {message}",
            self.op_pos
        ))
    }

    /// Spends `n` of the item budget.
    pub(super) fn charge(&mut self, n: usize) -> Result<()> {
        match self.items_left.checked_sub(n) {
            Some(left) => {
                self.items_left = left;
                Ok(())
            }
            None => Err(self.fail(format!(
                "the pickle makes more than {} container items from {} bytes (one per byte plus \
                 {ITEMS_BASE}, at most {MAX_ITEMS}); no checkpoint needs that many",
                self.items_allowed,
                self.bytes.len()
            ))),
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| self.fail("the pickle ends in the middle of an opcode"))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.bytes[self.pos..];
        let end = rest
            .iter()
            .take(256)
            .position(|b| *b == b'\n')
            .ok_or_else(|| self.fail("GLOBAL name without a newline in its first 256 bytes"))?;
        let text = std::str::from_utf8(&rest[..end])
            .map_err(|_| self.fail("GLOBAL name is not UTF-8"))?
            .to_owned();
        self.pos += end + 1;
        Ok(text)
    }

    fn string(&mut self, len: u64) -> Result<Value> {
        if len > MAX_STRING_BYTES as u64 {
            return Err(self.fail(format!(
                "string of {len} bytes; the limit is {MAX_STRING_BYTES}"
            )));
        }
        let bytes = self.take(len as usize)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(Value::Str(text.to_owned())),
            Err(_) => Err(self.fail("string is not valid UTF-8")),
        }
    }

    pub(super) fn alloc(&mut self, value: Value) -> Result<ValueId> {
        if self.values.len() >= MAX_VALUES {
            return Err(self.fail(format!(
                "more than {MAX_VALUES} values; no checkpoint needs that many"
            )));
        }
        self.values.push(value);
        Ok(self.values.len() - 1)
    }

    fn push_id(&mut self, id: ValueId) -> Result<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.fail(format!("stack deeper than {MAX_STACK}")));
        }
        self.stack.push(id);
        Ok(())
    }

    fn push(&mut self, value: Value) -> Result<()> {
        let id = self.alloc(value)?;
        self.push_id(id)
    }

    fn pop(&mut self) -> Result<ValueId> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.fail("pop from an empty stack"));
        }
        Ok(self.stack.pop().expect("checked non-empty"))
    }

    fn top(&self) -> Result<ValueId> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.fail("the stack is empty"));
        }
        Ok(*self.stack.last().expect("checked non-empty"))
    }

    /// Everything pushed since the last MARK, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<ValueId>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| self.fail("no MARK to pop to"))?;
        Ok(self.stack.split_off(mark))
    }

    fn memo_put(&mut self, index: u32) -> Result<()> {
        let id = self.top()?;
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&index) {
            return Err(self.fail(format!("more than {MAX_MEMO} memo entries")));
        }
        self.memo.insert(index, id);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> Result<()> {
        let id = *self
            .memo
            .get(&index)
            .ok_or_else(|| self.fail(format!("memo entry {index} was never stored")))?;
        self.push_id(id)
    }

    pub(super) fn run(mut self) -> Result<Pickle> {
        loop {
            self.op_pos = self.pos;
            let byte = self.u8()?;
            let op = Opcode::from_byte(byte).ok_or_else(|| self.refused(byte, "unknown"))?;
            if op == Opcode::Stop {
                let root = self.pop()?;
                return Ok(Pickle {
                    values: self.values,
                    root,
                });
            }
            self.step(byte, op)?;
        }
    }

    /// Runs one opcode other than STOP.
    fn step(&mut self, byte: u8, op: Opcode) -> Result<()> {
        use Opcode as Op;
        match op {
            Op::Proto => self.proto(),
            // A length hint for buffered readers; everything is in memory already.
            Op::Frame => self.take(8).map(drop),
            Op::Mark => self.mark(),
            Op::Pop => self.pop().map(drop),
            Op::PopMark => self.pop_mark().map(drop),
            Op::None => self.push(Value::None),
            Op::NewTrue => self.push(Value::Bool(true)),
            Op::NewFalse => self.push(Value::Bool(false)),
            Op::BinInt1 | Op::BinInt2 | Op::BinInt | Op::Long1 => {
                let value = self.int(op)?;
                self.push(Value::Int(value))
            }
            Op::BinFloat => {
                let value = f64::from_be_bytes(self.array()?);
                self.push(Value::Float(value))
            }
            Op::BinUnicode | Op::ShortBinUnicode | Op::BinUnicode8 => {
                let len = self.length(op)?;
                let value = self.string(len)?;
                self.push(value)
            }
            Op::EmptyDict => self.push(Value::Dict(Vec::new())),
            Op::EmptyList => self.push(Value::List(Vec::new())),
            Op::EmptyTuple | Op::Tuple | Op::Tuple1 | Op::Tuple2 | Op::Tuple3 => self.tuple(op),
            Op::Append | Op::Appends | Op::SetItem | Op::SetItems => self.fill(op),
            Op::BinPut | Op::LongBinPut | Op::Memoize => {
                let index = self.memo_index(op)?;
                self.memo_put(index)
            }
            Op::BinGet | Op::LongBinGet => {
                let index = self.memo_index(op)?;
                self.memo_get(index)
            }
            Op::Global | Op::StackGlobal => {
                let global = self.global_op(op)?;
                self.push(Value::Global(global))
            }
            Op::BinPersId => {
                let pid = self.pop()?;
                let storage = self.persistent_load(pid)?;
                self.push(Value::Storage(Box::new(storage)))
            }
            Op::Reduce => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let result = self.reduce(callable, args)?;
                self.push_id(result)
            }
            Op::Build => {
                let state = self.pop()?;
                let target = self.top()?;
                self.build(target, state)
            }
            _ => Err(self.refused(byte, op.name())),
        }
    }

    /// An opcode this reader does not run.
    fn refused(&self, byte: u8, name: &str) -> Error {
        self.fail(format!(
            "opcode 0x{byte:02x} ({name}) is not one a tensor checkpoint uses; refused"
        ))
    }

    /// PROTO: protocols 2 to 5 share every opcode read here.
    fn proto(&mut self) -> Result<()> {
        let protocol = self.u8()?;
        if !(2..=5).contains(&protocol) {
            return Err(self.fail(format!(
                "pickle protocol {protocol}; torch.save writes 2 (or 3 to 5 when asked)"
            )));
        }
        Ok(())
    }

    fn mark(&mut self) -> Result<()> {
        if self.marks.len() >= MAX_STACK {
            return Err(self.fail(format!("more than {MAX_STACK} open MARKs")));
        }
        self.marks.push(self.stack.len());
        Ok(())
    }

    /// The operand of BININT1, BININT2, BININT or LONG1.
    fn int(&mut self, op: Opcode) -> Result<i64> {
        Ok(match op {
            Opcode::BinInt1 => self.u8()?.into(),
            Opcode::BinInt2 => u16::from_le_bytes(self.array()?).into(),
            Opcode::BinInt => i32::from_le_bytes(self.array()?).into(),
            _ => {
                // LONG1: little-endian two's complement of n bytes.
                let n = self.u8()? as usize;
                if n > 8 {
                    return Err(self.fail(format!(
                        "integer of {n} bytes; only 64-bit integers are accepted"
                    )));
                }
                let bytes = self.take(n)?;
                let mut buf = if bytes.last().is_some_and(|b| b & 0x80 != 0) {
                    [0xff; 8]
                } else {
                    [0; 8]
                };
                buf[..n].copy_from_slice(bytes);
                i64::from_le_bytes(buf)
            }
        })
    }

    /// The length operand of SHORT_BINUNICODE, BINUNICODE or BINUNICODE8.
    fn length(&mut self, op: Opcode) -> Result<u64> {
        Ok(match op {
            Opcode::ShortBinUnicode => self.u8()?.into(),
            Opcode::BinUnicode => u32::from_le_bytes(self.array()?).into(),
            _ => u64::from_le_bytes(self.array()?),
        })
    }

    /// EMPTY_TUPLE, TUPLE (everything since the MARK) or TUPLE1 to TUPLE3.
    fn tuple(&mut self, op: Opcode) -> Result<()> {
        let n = match op {
            Opcode::EmptyTuple => 0,
            Opcode::Tuple1 => 1,
            Opcode::Tuple2 => 2,
            Opcode::Tuple3 => 3,
            _ => {
                let items = self.pop_mark()?;
                self.charge(items.len())?;
                return self.push(Value::Tuple(items));
            }
        };
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() < floor + n {
            return Err(self.fail(format!("TUPLE{n} with fewer than {n} items")));
        }
        let items = self.stack.split_off(self.stack.len() - n);
        self.charge(n)?;
        self.push(Value::Tuple(items))
    }

    /// APPEND, APPENDS, SETITEM or SETITEMS: items into the list or dict below them.
    fn fill(&mut self, op: Opcode) -> Result<()> {
        let items = match op {
            Opcode::Append => vec![self.pop()?],
            Opcode::SetItem => {
                let value = self.pop()?;
                let key = self.pop()?;
                vec![key, value]
            }
            _ => self.pop_mark()?,
        };
        let target = self.top()?;
        match op {
            Opcode::Append | Opcode::Appends => self.extend_list(target, items),
            _ => self.set_items(target, items),
        }
    }

    /// The memo index of BINPUT, LONG_BINPUT, BINGET or LONG_BINGET; MEMOIZE's is the next free one.
    fn memo_index(&mut self, op: Opcode) -> Result<u32> {
        match op {
            Opcode::BinPut | Opcode::BinGet => Ok(self.u8()?.into()),
            Opcode::Memoize => {
                u32::try_from(self.memo.len()).map_err(|_| self.fail("memo index overflow"))
            }
            _ => Ok(u32::from_le_bytes(self.array()?)),
        }
    }

    /// The global GLOBAL names in its two lines, or STACK_GLOBAL in its two strings.
    fn global_op(&mut self, op: Opcode) -> Result<Global> {
        if op == Opcode::Global {
            let module = self.line()?;
            let name = self.line()?;
            return self.global(&module, &name);
        }
        let name = self.pop()?;
        let module = self.pop()?;
        let (Value::Str(module), Value::Str(name)) = (&self.values[module], &self.values[name])
        else {
            return Err(self.fail("STACK_GLOBAL needs two strings"));
        };
        self.global(module, name)
    }
}
