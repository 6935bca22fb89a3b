//! What the whitelisted names and the container opcodes build: lists, dicts, storages, tensors.

use super::machine::{Key, Machine};
use super::{Global, Storage, Tensor, Value, ValueId, MAX_DIMS, MAX_TENSORS};
use crate::error::Result;

impl Machine<'_> {
    /// The whitelist check. Everything that is not on it stops the read here.
    pub(super) fn global(&self, module: &str, name: &str) -> Result<Global> {
        Global::lookup(module, name).ok_or_else(|| {
            self.fail(format!(
                "refused global {module}.{name}: a tensor checkpoint only needs \
                 torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter, torch.*Storage \
                 and collections.OrderedDict (nothing was executed)"
            ))
        })
    }

    pub(super) fn extend_list(&mut self, list: ValueId, items: Vec<ValueId>) -> Result<()> {
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

    pub(super) fn set_items(&mut self, dict: ValueId, items: Vec<ValueId>) -> Result<()> {
        if !items.len().is_multiple_of(2) {
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
    pub(super) fn persistent_load(&self, pid: ValueId) -> Result<Storage> {
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

    pub(super) fn reduce(&mut self, callable: ValueId, args: ValueId) -> Result<ValueId> {
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

    pub(super) fn build(&mut self, target: ValueId, state: ValueId) -> Result<()> {
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
