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

mod machine;
mod objects;
mod opcode;
#[cfg(test)]
mod tests;

use crate::error::{Error, Result};
use machine::Machine;

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
    Machine::new(bytes).run()
}
