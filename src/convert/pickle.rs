//! A strict reader for the pickle inside a PyTorch checkpoint: it interprets opcodes, never
//! executes them.
//!
//! Python's pickle is a little stack machine whose `GLOBAL` + `REDUCE` opcodes call any function
//! by name, which is how a malicious `model.pt` runs `os.system`. This reader knows a fixed
//! whitelist of names (the ones a tensor checkpoint needs: `torch._utils._rebuild_tensor_v2`,
//! `torch._utils._rebuild_parameter`, `torch.*Storage`, `collections.OrderedDict`) and refuses
//! every other name the moment it is read, before anything else happens. Whitelisted names are
//! not called either: each is interpreted here, with its arguments checked.
//!
//! Why not a crate: `serde-pickle` has no notion of globals beyond a few builtins and cannot
//! represent a tensor rebuild; `repugnant-pickle` (0.0.1, "low effort scraping") builds a tree of
//! any global it meets and has no limits; candle's reader is inside `candle-core`, far too heavy
//! to pull in for this. None of them lets us own the whitelist and the limits, which are the
//! whole point here, so this is a small machine for the opcodes `torch.save` emits (protocol 2,
//! plus the few protocol 4 ones a `pickle_protocol=4` save adds).
//!
//! Memory is bounded: the input is at most [`MAX_PICKLE_BYTES`], values live in one arena of at
//! most [`MAX_VALUES`] entries (memo references share an entry, so `BINGET` never copies), and the
//! stack, memo and tensor count have their own limits. Every container item made, copied or looked
//! at is charged to a budget of one per input byte plus [`ITEMS_BASE`], at most [`MAX_ITEMS`]; dict
//! keys are compared through interned ids, so a key is hashed once however often it is set. The
//! work of a read is therefore linear in its input and its memory bounded. Containers may end up cyclic (a pickle can
//! append a list to itself); readers of the arena walk it with their own depth limits.

use std::collections::HashMap;

use crate::error::{Error, Result};

/// Largest `data.pkl` accepted. A state dict's pickle is a few KiB; the tensors live elsewhere.
pub const MAX_PICKLE_BYTES: usize = 16 << 20;
/// Most values (containers, numbers, strings, tensors) one pickle may create.
pub const MAX_VALUES: usize = 1 << 20;
/// Deepest the machine's stack may grow.
pub const MAX_STACK: usize = 1 << 16;
/// Most memo entries.
pub const MAX_MEMO: usize = 1 << 20;
/// Most tensors one checkpoint may hold; the model has 24, a training checkpoint a few hundred.
pub const MAX_TENSORS: usize = 4096;
/// Most dimensions of one tensor.
pub const MAX_DIMS: usize = 8;
/// Longest string accepted.
pub const MAX_STRING_BYTES: usize = 1 << 20;
/// Container items (list, tuple and dict entries, and the items copied or looked at to build
/// them) one pickle may make beyond one per byte of its own.
pub const ITEMS_BASE: usize = 1 << 16;
/// Most container items any pickle may make. Memo references let a few bytes reuse a large list
/// (an `OrderedDict` built again and again from one list of pairs), so without this budget a
/// 1 MB pickle could make billions of items; with it, the machine's work and memory grow at most
/// linearly with the input and never past this cap (about 4 million items, a few hundred MB).
pub const MAX_ITEMS: usize = 1 << 22;

/// Index of a value in [`Pickle::values`].
pub type ValueId = usize;

/// Element type of a storage, from its `torch.*Storage` class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// `torch.FloatStorage`
    F32,
    /// `torch.DoubleStorage`
    F64,
    /// `torch.HalfStorage`
    F16,
    /// `torch.BFloat16Storage`
    BF16,
    /// `torch.LongStorage`
    I64,
    /// `torch.IntStorage`
    I32,
    /// `torch.ShortStorage`
    I16,
    /// `torch.CharStorage`
    I8,
    /// `torch.ByteStorage`
    U8,
    /// `torch.BoolStorage`
    Bool,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 | Dtype::BF16 | Dtype::I16 => 2,
            Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
        }
    }

    /// Whether the values are floating point (what model weights must be).
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F64 | Dtype::F16 | Dtype::BF16)
    }

    fn from_storage_class(name: &str) -> Option<Dtype> {
        Some(match name {
            "FloatStorage" => Dtype::F32,
            "DoubleStorage" => Dtype::F64,
            "HalfStorage" => Dtype::F16,
            "BFloat16Storage" => Dtype::BF16,
            "LongStorage" => Dtype::I64,
            "IntStorage" => Dtype::I32,
            "ShortStorage" => Dtype::I16,
            "CharStorage" => Dtype::I8,
            "ByteStorage" => Dtype::U8,
            "BoolStorage" => Dtype::Bool,
            _ => return None,
        })
    }
}

/// The only names a checkpoint may refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Global {
    /// `collections.OrderedDict`: the type of every `state_dict()`.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2`: a tensor as a view of a storage.
    RebuildTensorV2,
    /// `torch._utils._rebuild_parameter`: an `nn.Parameter` around a tensor.
    RebuildParameter,
    /// `torch.<Type>Storage`: names a storage's element type inside a persistent id.
    Storage(Dtype),
}

impl Global {
    /// The whitelist: `Some` for the names above, `None` for everything else.
    pub fn lookup(module: &str, name: &str) -> Option<Global> {
        match (module, name) {
            ("collections", "OrderedDict") => Some(Global::OrderedDict),
            ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
            ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
            ("torch", class) => Dtype::from_storage_class(class).map(Global::Storage),
            _ => None,
        }
    }
}

/// A storage named by a persistent id: its bytes are the zip entry `<archive>/data/<key>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Storage {
    /// Element type.
    pub dtype: Dtype,
    /// Name of the zip entry under `data/`.
    pub key: String,
    /// Elements the pickle says the storage holds.
    pub numel: u64,
}

/// A tensor: a strided view of a storage, already checked to lie inside the storage's `numel`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tensor {
    /// The storage it views.
    pub storage: Storage,
    /// First element, in elements.
    pub offset: u64,
    /// Size of each dimension.
    pub shape: Vec<u64>,
    /// Step of each dimension, in elements.
    pub stride: Vec<u64>,
}

impl Tensor {
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// One value of the pickle.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `None`
    None,
    /// `True` / `False`
    Bool(bool),
    /// An integer that fits 64 bits (larger ones are refused).
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A tuple.
    Tuple(Vec<ValueId>),
    /// A list.
    List(Vec<ValueId>),
    /// A dict or `OrderedDict`, in insertion order (a repeated key keeps its first place and takes
    /// the last value, as Python does).
    Dict(Vec<(ValueId, ValueId)>),
    /// A whitelisted name, before it is applied.
    Global(Global),
    /// A storage from a persistent id.
    Storage(Box<Storage>),
    /// A tensor.
    Tensor(Box<Tensor>),
}

impl Value {
    /// What the value is, in a word, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }
}

/// The result of reading a pickle: every value it made, and the one it returned.
#[derive(Clone, Debug)]
pub struct Pickle {
    /// The arena; containers refer to entries by index.
    pub values: Vec<Value>,
    /// The value `STOP` returned.
    pub root: ValueId,
}

impl Pickle {
    /// The value at `id`.
    pub fn get(&self, id: ValueId) -> &Value {
        &self.values[id]
    }

    /// The string at `id`, if it is one.
    pub fn str(&self, id: ValueId) -> Option<&str> {
        match self.get(id) {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Reads `bytes` as a checkpoint pickle. Nothing in it is executed; any name outside the
/// whitelist, any opcode outside the supported set and any limit crossed is an error.
pub fn read(bytes: &[u8]) -> Result<Pickle> {
    if bytes.len() > MAX_PICKLE_BYTES {
        return Err(Error::model_invalid(format!(
            "the checkpoint's pickle is {} bytes; the limit is {MAX_PICKLE_BYTES}",
            bytes.len()
        )));
    }
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
    .run()
}

struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Offset of the opcode being run, for messages.
    op_pos: usize,
    values: Vec<Value>,
    stack: Vec<ValueId>,
    /// Stack lengths at each MARK (Python 3's own design: marks are not stack items).
    marks: Vec<usize>,
    memo: HashMap<u32, ValueId>,
    /// Where each string or int key sits in its dict, so SETITEMS stays linear in the input
    /// (a linear search per key would let a large dict take quadratic time).
    dict_keys: HashMap<(ValueId, Key), usize>,
    /// Each distinct string used as a dict key, and its id. Strings are made from the input's own
    /// bytes, so this holds at most the input's size.
    interned: HashMap<String, u32>,
    /// The interned id of each string value already used as a key: a key reused through the memo
    /// is not hashed again.
    interned_ids: HashMap<ValueId, u32>,
    tensors: usize,
    /// The item budget this input gets.
    items_allowed: usize,
    /// What is left of it.
    items_left: usize,
}

/// A dict key that is compared (checkpoints only use strings and ints); strings by interned id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Str(u32),
    Int(i64),
}

impl Machine<'_> {
    fn fail(&self, message: impl std::fmt::Display) -> Error {
        Error::model_invalid(format!(
            "checkpoint pickle, offset {}: {message}",
            self.op_pos
        ))
    }

    /// Spends `n` of the item budget.
    fn charge(&mut self, n: usize) -> Result<()> {
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

    fn alloc(&mut self, value: Value) -> Result<ValueId> {
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

    fn run(mut self) -> Result<Pickle> {
        loop {
            self.op_pos = self.pos;
            let op = self.u8()?;
            match op {
                // PROTO: protocols 2 to 5 share every opcode read here.
                0x80 => {
                    let protocol = self.u8()?;
                    if !(2..=5).contains(&protocol) {
                        return Err(self.fail(format!(
                            "pickle protocol {protocol}; torch.save writes 2 (or 3 to 5 when asked)"
                        )));
                    }
                }
                // FRAME: a length hint for buffered readers; everything is in memory already.
                0x95 => {
                    self.take(8)?;
                }
                b'.' => {
                    // STOP
                    let root = self.pop()?;
                    return Ok(Pickle {
                        values: self.values,
                        root,
                    });
                }
                b'(' => {
                    // MARK
                    if self.marks.len() >= MAX_STACK {
                        return Err(self.fail(format!("more than {MAX_STACK} open MARKs")));
                    }
                    self.marks.push(self.stack.len());
                }
                b'0' => {
                    // POP
                    self.pop()?;
                }
                b'1' => {
                    // POP_MARK
                    self.pop_mark()?;
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()))?
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.push(Value::Int(v.into()))?
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.push(Value::Int(v.into()))?
                }
                0x8a => {
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
                    self.push(Value::Int(i64::from_le_bytes(buf)))?
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.array()?);
                    self.push(Value::Float(v))?
                }
                b'X' => {
                    let len = u32::from_le_bytes(self.array()?);
                    let v = self.string(len.into())?;
                    self.push(v)?
                }
                0x8c => {
                    let len = self.u8()?;
                    let v = self.string(len.into())?;
                    self.push(v)?
                }
                0x8d => {
                    let len = u64::from_le_bytes(self.array()?);
                    let v = self.string(len)?;
                    self.push(v)?
                }
                b'}' => self.push(Value::Dict(Vec::new()))?,
                b']' => self.push(Value::List(Vec::new()))?,
                b')' => self.push(Value::Tuple(Vec::new()))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.charge(items.len())?;
                    self.push(Value::Tuple(items))?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let floor = self.marks.last().copied().unwrap_or(0);
                    if self.stack.len() < floor + n {
                        return Err(self.fail(format!("TUPLE{n} with fewer than {n} items")));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.charge(n)?;
                    self.push(Value::Tuple(items))?
                }
                b'a' => {
                    let item = self.pop()?;
                    let list = self.top()?;
                    self.extend_list(list, vec![item])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let list = self.top()?;
                    self.extend_list(list, items)?
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    let dict = self.top()?;
                    self.set_items(dict, vec![key, value])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let dict = self.top()?;
                    self.set_items(dict, items)?
                }
                b'q' => {
                    let index = self.u8()?;
                    self.memo_put(index.into())?
                }
                b'r' => {
                    let index = u32::from_le_bytes(self.array()?);
                    self.memo_put(index)?
                }
                0x94 => {
                    // MEMOIZE: the next free index.
                    let index = u32::try_from(self.memo.len())
                        .map_err(|_| self.fail("memo index overflow"))?;
                    self.memo_put(index)?
                }
                b'h' => {
                    let index = self.u8()?;
                    self.memo_get(index.into())?
                }
                b'j' => {
                    let index = u32::from_le_bytes(self.array()?);
                    self.memo_get(index)?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let global = self.global(&module, &name)?;
                    self.push(Value::Global(global))?
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) =
                        (&self.values[module], &self.values[name])
                    else {
                        return Err(self.fail("STACK_GLOBAL needs two strings"));
                    };
                    let global = self.global(&module.clone(), &name.clone())?;
                    self.push(Value::Global(global))?
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = self.persistent_load(pid)?;
                    self.push(Value::Storage(Box::new(storage)))?
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let result = self.reduce(callable, args)?;
                    self.push_id(result)?
                }
                b'b' => {
                    let state = self.pop()?;
                    let target = self.top()?;
                    self.build(target, state)?
                }
                other => {
                    return Err(self.fail(format!(
                        "opcode 0x{other:02x} ({}) is not one a tensor checkpoint uses; refused",
                        opcode_name(other)
                    )))
                }
            }
        }
    }

    /// The whitelist check. Everything that is not on it stops the read here.
    fn global(&self, module: &str, name: &str) -> Result<Global> {
        Global::lookup(module, name).ok_or_else(|| {
            self.fail(format!(
                "refused global {module}.{name}: a tensor checkpoint only needs \
                 torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter, torch.*Storage \
                 and collections.OrderedDict (nothing was executed)"
            ))
        })
    }

    fn extend_list(&mut self, list: ValueId, items: Vec<ValueId>) -> Result<()> {
        self.charge(items.len())?;
        match &mut self.values[list] {
            Value::List(existing) => {
                existing.extend(items);
                Ok(())
            }
            other => {
                let kind = other.kind();
                Err(self.fail(format!("APPEND to a {kind}, not a list")))
            }
        }
    }

    fn set_items(&mut self, dict: ValueId, items: Vec<ValueId>) -> Result<()> {
        if items.len() % 2 != 0 {
            return Err(self.fail("SETITEMS with an odd number of items"));
        }
        // Every pair is charged, replaced or not: setting one key again and again is work too.
        self.charge(items.len() / 2)?;
        if !matches!(self.values[dict], Value::Dict(_)) {
            let kind = self.values[dict].kind();
            return Err(self.fail(format!("SETITEM on a {kind}, not a dict")));
        }
        // Keys are compared only when they are strings or ints (what checkpoints use); any other
        // key is kept as a separate entry.
        for pair in items.chunks_exact(2) {
            let (key, value) = (pair[0], pair[1]);
            let wanted = self.key(key);
            let existing = wanted.and_then(|k| self.dict_keys.get(&(dict, k)).copied());
            let Value::Dict(entries) = &mut self.values[dict] else {
                unreachable!("checked to be a dict");
            };
            match existing {
                Some(index) => entries[index].1 = value,
                None => {
                    entries.push((key, value));
                    let index = entries.len() - 1;
                    if let Some(k) = wanted {
                        self.dict_keys.insert((dict, k), index);
                    }
                }
            }
        }
        Ok(())
    }

    /// The comparable form of the key at `id`; a string is hashed only the first time it is used.
    fn key(&mut self, id: ValueId) -> Option<Key> {
        match &self.values[id] {
            Value::Int(i) => Some(Key::Int(*i)),
            Value::Str(text) => {
                if let Some(interned) = self.interned_ids.get(&id) {
                    return Some(Key::Str(*interned));
                }
                let next = u32::try_from(self.interned.len()).expect("fewer keys than values");
                let interned = match self.interned.get(text.as_str()) {
                    Some(interned) => *interned,
                    None => {
                        self.interned.insert(text.clone(), next);
                        next
                    }
                };
                self.interned_ids.insert(id, interned);
                Some(Key::Str(interned))
            }
            _ => None,
        }
    }

    /// `('storage', torch.<T>Storage, key, location, numel)`: what torch.save's
    /// `persistent_id` writes for every storage.
    fn persistent_load(&self, pid: ValueId) -> Result<Storage> {
        let bad = |what: &str| {
            self.fail(format!(
                "persistent id {what}; expected ('storage', torch.<Type>Storage, key, location, numel)"
            ))
        };
        let Value::Tuple(items) = &self.values[pid] else {
            return Err(bad(&format!("is a {}", self.values[pid].kind())));
        };
        let [tag, class, key, location, numel] = items[..] else {
            return Err(bad(&format!("has {} items", items.len())));
        };
        if self.values[tag] != Value::Str("storage".into()) {
            return Err(bad("does not start with 'storage'"));
        }
        let Value::Global(Global::Storage(dtype)) = self.values[class] else {
            return Err(bad("does not name a storage class"));
        };
        let Value::Str(key) = &self.values[key] else {
            return Err(bad("has a key that is not a string"));
        };
        if key.is_empty()
            || key.len() > 64
            || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(bad(&format!("has the key {key:?}")));
        }
        if !matches!(self.values[location], Value::Str(_)) {
            return Err(bad("has a location that is not a string"));
        }
        let Value::Int(numel) = self.values[numel] else {
            return Err(bad("has a numel that is not an int"));
        };
        let numel = u64::try_from(numel).map_err(|_| bad("has a negative numel"))?;
        Ok(Storage {
            dtype,
            key: key.clone(),
            numel,
        })
    }

    fn reduce(&mut self, callable: ValueId, args: ValueId) -> Result<ValueId> {
        let Value::Global(global) = self.values[callable] else {
            return Err(self.fail(format!(
                "REDUCE on a {}; only whitelisted globals can be applied",
                self.values[callable].kind()
            )));
        };
        let Value::Tuple(args) = &self.values[args] else {
            return Err(self.fail("REDUCE arguments are not a tuple"));
        };
        // The arguments are copied, and one tuple can be applied many times through the memo.
        let args = args.clone();
        self.charge(args.len())?;
        match global {
            Global::OrderedDict => {
                // OrderedDict() then SETITEMS is what pickle writes; OrderedDict([(k, v), ...])
                // is accepted too.
                let mut entries = Vec::new();
                match args[..] {
                    [] => {}
                    [items] => {
                        let (Value::List(pairs) | Value::Tuple(pairs)) = &self.values[items] else {
                            return Err(self.fail("OrderedDict argument is not a list of pairs"));
                        };
                        // One list of pairs can be applied many times through the memo.
                        let pairs = pairs.clone();
                        self.charge(pairs.len())?;
                        for pair in &pairs {
                            match &self.values[*pair] {
                                Value::Tuple(kv) | Value::List(kv) if kv.len() == 2 => {
                                    entries.extend_from_slice(kv)
                                }
                                _ => return Err(self.fail("OrderedDict item is not a pair")),
                            }
                        }
                    }
                    _ => return Err(self.fail("OrderedDict with more than one argument")),
                }
                let dict = self.alloc(Value::Dict(Vec::new()))?;
                self.set_items(dict, entries)?;
                Ok(dict)
            }
            Global::RebuildTensorV2 => {
                let tensor = self.rebuild_tensor(&args)?;
                self.tensors += 1;
                if self.tensors > MAX_TENSORS {
                    return Err(
                        self.fail(format!("more than {MAX_TENSORS} tensors; the model has 24"))
                    );
                }
                self.alloc(Value::Tensor(Box::new(tensor)))
            }
            Global::RebuildParameter => {
                match args[..] {
                    [data, _, _] if matches!(self.values[data], Value::Tensor(_)) => Ok(data),
                    _ => Err(self
                        .fail("_rebuild_parameter needs (tensor, requires_grad, backward_hooks)")),
                }
            }
            Global::Storage(_) => {
                Err(self.fail("a storage class is only valid inside a persistent id, never called"))
            }
        }
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
    /// backward_hooks[, metadata])`, checked so that every element lies inside the storage.
    fn rebuild_tensor(&self, args: &[ValueId]) -> Result<Tensor> {
        let bad = |what: String| self.fail(format!("_rebuild_tensor_v2: {what}"));
        if !(6..=7).contains(&args.len()) {
            return Err(bad(format!("{} arguments; expected 6 or 7", args.len())));
        }
        let Value::Storage(storage) = &self.values[args[0]] else {
            return Err(bad("the first argument is not a storage".into()));
        };
        let Value::Int(offset) = self.values[args[1]] else {
            return Err(bad("the storage offset is not an int".into()));
        };
        let offset = u64::try_from(offset).map_err(|_| bad("negative storage offset".into()))?;
        let dims = |id: ValueId, what: &str| -> Result<Vec<u64>> {
            let Value::Tuple(items) = &self.values[id] else {
                return Err(bad(format!("{what} is not a tuple")));
            };
            if items.len() > MAX_DIMS {
                return Err(bad(format!(
                    "{} dimensions; the limit is {MAX_DIMS}",
                    items.len()
                )));
            }
            items
                .iter()
                .map(|item| match self.values[*item] {
                    Value::Int(v) if v >= 0 => Ok(v as u64),
                    _ => Err(bad(format!("{what} holds something other than a size"))),
                })
                .collect()
        };
        let shape = dims(args[2], "size")?;
        let stride = dims(args[3], "stride")?;
        if shape.len() != stride.len() {
            return Err(bad(format!(
                "size has {} dimensions but stride has {}",
                shape.len(),
                stride.len()
            )));
        }
        if !matches!(self.values[args[4]], Value::Bool(_)) {
            return Err(bad("requires_grad is not a bool".into()));
        }
        if !matches!(self.values[args[5]], Value::Dict(_)) {
            return Err(bad("backward_hooks is not a dict".into()));
        }
        let numel = shape
            .iter()
            .try_fold(1u64, |n, d| n.checked_mul(*d))
            .ok_or_else(|| bad(format!("size {shape:?} overflows")))?;
        // A real checkpoint's tensor never repeats elements of its storage (stride 0); refusing
        // that keeps every tensor no larger than the storage bytes that must back it.
        if numel > storage.numel {
            return Err(bad(format!(
                "size {shape:?} has {numel} elements but storage {:?} holds {}",
                storage.key, storage.numel
            )));
        }
        if numel > 0 {
            // The last element a view touches; it must lie inside the storage.
            let last = shape
                .iter()
                .zip(&stride)
                .try_fold(offset, |acc, (d, s)| {
                    (d - 1).checked_mul(*s)?.checked_add(acc)
                })
                .ok_or_else(|| bad(format!("size {shape:?} and stride {stride:?} overflow")))?;
            if last >= storage.numel {
                return Err(bad(format!(
                    "size {shape:?}, stride {stride:?} and offset {offset} reach element {last} \
                     of storage {:?}, which holds {}",
                    storage.key, storage.numel
                )));
            }
        }
        Ok(Tensor {
            storage: (**storage).clone(),
            offset,
            shape,
            stride,
        })
    }

    fn build(&mut self, target: ValueId, state: ValueId) -> Result<()> {
        // `state_dict()` carries a `_metadata` attribute (module versions), restored by BUILD on
        // the OrderedDict. The conversion does not need it, so it is checked to be data and left.
        match (&self.values[target], &self.values[state]) {
            (Value::Dict(_), Value::Dict(_) | Value::None) => Ok(()),
            (target, state) => Err(self.fail(format!(
                "BUILD of a {} with a {} state is not something a checkpoint does",
                target.kind(),
                state.kind()
            ))),
        }
    }
}

/// Python's name for an opcode, for messages about refused ones.
fn opcode_name(op: u8) -> &'static str {
    match op {
        b'i' => "INST",
        b'o' => "OBJ",
        0x81 => "NEWOBJ",
        0x92 => "NEWOBJ_EX",
        b'P' => "PERSID",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'I' => "INT",
        b'L' => "LONG",
        b'F' => "FLOAT",
        0x8b => "LONG4",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        0x82..=0x84 => "EXT",
        b'2' => "DUP",
        b'd' => "DICT",
        b'l' => "LIST",
        b'g' => "GET",
        b'p' => "PUT",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Status;

    /// A protocol-2 pickle of `body` followed by STOP.
    fn pickle(body: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0x80, 2];
        bytes.extend_from_slice(body);
        bytes.push(b'.');
        bytes
    }

    fn refused(bytes: &[u8]) -> String {
        let error = read(bytes).expect_err("must be refused");
        assert_eq!(error.status(), Status::ModelInvalid);
        error.message().to_owned()
    }

    #[test]
    fn os_system_is_refused_at_the_global() {
        // cos\nsystem\n(S'echo pwned'\ntR. — what `pickle.dumps` of a malicious __reduce__ gives.
        let message = refused(b"\x80\x02cos\nsystem\nX\x0a\x00\x00\x00echo pwnedtR.");
        assert!(message.contains("refused global os.system"), "{message}");
    }

    #[test]
    fn builtins_eval_and_other_globals_are_refused() {
        for (module, name) in [
            ("builtins", "eval"),
            ("builtins", "exec"),
            ("__builtin__", "getattr"),
            ("subprocess", "Popen"),
            ("torch", "load"),
            ("torch._utils", "_rebuild_from_type_v2"),
            ("collections", "defaultdict"),
            ("torch.nn.modules.linear", "Linear"),
        ] {
            let body = format!("c{module}\n{name}\n)R");
            let message = refused(&pickle(body.as_bytes()));
            assert!(
                message.contains(&format!("refused global {module}.{name}")),
                "{message}"
            );
        }
    }

    #[test]
    fn stack_global_is_checked_against_the_same_whitelist() {
        let message = refused(b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94)R.");
        assert!(
            message.contains("refused global builtins.eval"),
            "{message}"
        );
    }

    #[test]
    fn object_building_opcodes_are_refused() {
        for op in [b'i', b'o', 0x81, 0x92, b'P'] {
            let message = refused(&pickle(&[op]));
            assert!(message.contains("refused"), "{message}");
        }
    }

    #[test]
    fn reduce_of_a_non_global_is_refused() {
        let message = refused(&pickle(b"})R"));
        assert!(message.contains("REDUCE on a dict"), "{message}");
    }

    #[test]
    fn storage_class_cannot_be_called() {
        let message = refused(&pickle(b"ctorch\nFloatStorage\n)R"));
        assert!(
            message.contains("only valid inside a persistent id"),
            "{message}"
        );
    }

    /// `_rebuild_tensor_v2(storage(numel), 0, size, stride, False, OrderedDict())`.
    fn tensor_pickle(numel: u8, size: &[u8], stride: &[u8]) -> Vec<u8> {
        let mut body = b"ctorch._utils\n_rebuild_tensor_v2\n(".to_vec();
        body.extend_from_slice(b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK");
        body.push(numel);
        body.extend_from_slice(b"tQK\x00(");
        for s in size {
            body.extend_from_slice(&[b'K', *s]);
        }
        body.extend_from_slice(b"t(");
        for s in stride {
            body.extend_from_slice(&[b'K', *s]);
        }
        body.extend_from_slice(b"t\x89ccollections\nOrderedDict\n)RtR");
        pickle(&body)
    }

    #[test]
    fn tensor_inside_its_storage_is_read() {
        let p = read(&tensor_pickle(6, &[2, 3], &[3, 1])).unwrap();
        let Value::Tensor(t) = p.get(p.root) else {
            panic!("not a tensor: {:?}", p.get(p.root))
        };
        assert_eq!((t.shape.as_slice(), t.numel()), (&[2, 3][..], 6));
        assert_eq!(t.storage.key, "0");
    }

    #[test]
    fn tensor_larger_than_its_storage_is_refused() {
        let message = refused(&tensor_pickle(5, &[2, 3], &[3, 1]));
        assert!(message.contains("storage \"0\" holds 5"), "{message}");
        // As many elements as the storage, but strided past its end.
        let message = refused(&tensor_pickle(6, &[2, 3], &[4, 1]));
        assert!(message.contains("reach element 6"), "{message}");
    }

    #[test]
    fn truncated_and_empty_pickles_are_refused() {
        refused(b"");
        refused(b"\x80\x02");
        refused(b"\x80\x02X\xff\xff\xff\x7fabc");
        refused(&pickle(b""));
    }

    #[test]
    fn memo_shares_instead_of_copying() {
        // A list appended to itself twice per level, 40 levels: 2^40 leaves if copied.
        let mut body = b"]q\x00".to_vec();
        for _ in 0..40 {
            body.extend_from_slice(b"](h\x00h\x00eq\x00");
        }
        let p = read(&pickle(&body)).unwrap();
        assert!(p.values.len() < 100);
    }

    #[test]
    fn stack_and_mark_limits_hold() {
        let body = vec![b'N'; MAX_STACK + 1];
        assert!(refused(&pickle(&body)).contains("stack deeper"));
        let body = vec![b'('; MAX_STACK + 1];
        assert!(refused(&pickle(&body)).contains("open MARKs"));
    }

    #[test]
    fn value_limit_holds() {
        // MAX_VALUES Nones, popped as they come so the stack stays shallow.
        let body = b"N0".repeat(MAX_VALUES + 1);
        assert!(refused(&pickle(&body)).contains("more than"));
    }

    #[test]
    fn ordered_dict_keeps_order_and_replaces_repeated_keys() {
        let body = b"ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00bK\x01X\x01\x00\x00\x00aK\x02X\x01\x00\x00\x00bK\x03u";
        let p = read(&pickle(body)).unwrap();
        let Value::Dict(entries) = p.get(p.root) else {
            panic!()
        };
        let flat: Vec<(&str, &Value)> = entries
            .iter()
            .map(|(k, v)| (p.str(*k).unwrap(), p.get(*v)))
            .collect();
        assert_eq!(flat, [("b", &Value::Int(3)), ("a", &Value::Int(2))]);
    }

    #[test]
    fn a_large_dict_is_read_in_linear_time() {
        // 300k distinct int keys in one dict: quadratic key lookup would take minutes.
        // Batches of 1000, as pickle writes them.
        let mut body = b"}".to_vec();
        for batch in 0..300i32 {
            body.push(b'(');
            for i in batch * 1000..(batch + 1) * 1000 {
                body.push(b'J');
                body.extend_from_slice(&i.to_le_bytes());
                body.push(b'N');
            }
            body.push(b'u');
        }
        let started = std::time::Instant::now();
        let p = read(&pickle(&body)).unwrap();
        let Value::Dict(entries) = p.get(p.root) else {
            panic!()
        };
        assert_eq!(entries.len(), 300_000);
        // Generous: linear work is a few hundred milliseconds even unoptimized.
        assert!(started.elapsed().as_secs() < 20);
    }

    #[test]
    fn an_ordered_dict_rebuilt_from_one_shared_list_runs_out_of_budget() {
        // One list of 100 pairs, memoised; OrderedDict(list) 2,500 times: 250,000 entries from
        // 16 KB, more than one item a byte plus the base allows.
        let mut body = b"ccollections\nOrderedDict\nq\x04](".to_vec();
        for i in 0..100u8 {
            body.extend_from_slice(&[0x8c, 1, i, b'N', 0x86]);
        }
        body.extend_from_slice(b"e\x85q\x05(");
        let prefix = body.len();
        for _ in 0..2500 {
            body.extend_from_slice(b"h\x04h\x05R0");
        }
        body.push(b't');
        let message = refused(&pickle(&body));
        assert!(message.contains("container items"), "{message}");
        // A dozen rebuilds fit.
        let mut few = body[..prefix + 12 * 6].to_vec();
        few.push(b't');
        assert!(read(&pickle(&few)).is_ok());
    }

    #[test]
    fn one_key_set_many_times_keeps_one_entry() {
        let mut body = b"}q\x02X\x00\x08\x00\x00".to_vec();
        body.extend_from_slice(&[b'k'; 2048]);
        body.extend_from_slice(b"q\x030");
        for _ in 0..3000 {
            body.extend_from_slice(b"h\x03Ns");
        }
        let p = read(&pickle(&body)).unwrap();
        let Value::Dict(entries) = p.get(p.root) else {
            panic!()
        };
        assert_eq!(entries.len(), 1);
    }

    #[test]
    fn long1_reads_signed_64_bit_and_refuses_wider() {
        let p = read(&pickle(b"\x8a\x02\xff\x7f")).unwrap();
        assert_eq!(p.get(p.root), &Value::Int(0x7fff));
        let p = read(&pickle(b"\x8a\x01\xff")).unwrap();
        assert_eq!(p.get(p.root), &Value::Int(-1));
        assert!(
            refused(&pickle(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01")).contains("64-bit")
        );
    }
}
