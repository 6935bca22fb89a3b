//! From a read pickle to the model's layers: finding the state dict, giving each module a role
//! from its parameters' names and shapes, and inferring the BatchNorm/ReLU order.

use std::fmt;

use super::pickle::{Pickle, Tensor, Value, ValueId, MAX_TENSORS};
use crate::error::{Error, Result};
use crate::model::NormOrder;

/// Keys under which training scripts keep the model's weights inside a checkpoint dict.
const STATE_DICT_KEYS: [&str; 3] = ["model_state_dict", "state_dict", "model"];

/// The state dict and what else the checkpoint held.
pub struct Found<'p> {
    /// `(name, tensor)` in the checkpoint's order.
    pub tensors: Vec<(&'p str, &'p Tensor)>,
    /// The key the state dict sat under, `None` for a bare state dict.
    pub under: Option<&'p str>,
    /// Every other entry of the checkpoint dict.
    pub extras: Vec<(&'p str, ValueId)>,
}

/// Finds the state dict: the root itself when every value is a tensor, else the dict under
/// `model_state_dict`, `state_dict` or `model`.
pub fn find_state_dict(pickle: &Pickle) -> Result<Found<'_>> {
    let root = dict_entries(pickle, pickle.root).ok_or_else(|| {
        Error::model_invalid(
            "the checkpoint holds no dict; expected a state_dict or a dict holding one \
             (a whole pickled nn.Module is not supported: save model.state_dict() instead)",
        )
    })?;
    let all_tensors = !root.is_empty()
        && root
            .iter()
            .all(|(_, v)| matches!(pickle.get(*v), Value::Tensor(_)));
    let (state, under) = if all_tensors {
        (root.clone(), None)
    } else {
        let found = STATE_DICT_KEYS.iter().find_map(|wanted| {
            root.iter()
                .find(|(k, _)| k == wanted)
                .and_then(|(k, v)| dict_entries(pickle, *v).map(|d| (d, *k)))
        });
        let Some((state, key)) = found else {
            // The first few keys, each shortened: the message stays one readable line.
            const SHOWN: usize = 20;
            let mut keys: Vec<String> = root
                .iter()
                .take(SHOWN)
                .map(|(k, _)| {
                    let short: String = k.chars().take(64).collect();
                    let more = if short.len() < k.len() { "..." } else { "" };
                    format!("{short:?}{more}")
                })
                .collect();
            if root.len() > SHOWN {
                keys.push(format!("and {} more", root.len() - SHOWN));
            }
            return Err(Error::model_invalid(format!(
                "no state_dict found: the checkpoint is a dict with keys [{}], neither all \
                 tensors nor holding one of {STATE_DICT_KEYS:?}",
                keys.join(", ")
            )));
        };
        (state, Some(key))
    };
    // One tensor can be named by any number of entries through the memo; the grouping below
    // compares names pairwise, so their count is bounded like the tensors'.
    if state.len() > MAX_TENSORS {
        return Err(Error::model_invalid(format!(
            "the state_dict has {} entries; the limit is {MAX_TENSORS}",
            state.len()
        )));
    }
    let mut tensors = Vec::with_capacity(state.len());
    for (name, id) in state {
        match pickle.get(id) {
            Value::Tensor(t) => tensors.push((name, &**t)),
            other => {
                return Err(Error::model_invalid(format!(
                    "state_dict entry {name:?} is not a tensor (it is a {})",
                    other.kind()
                )))
            }
        }
    }
    let extras = match under {
        None => Vec::new(),
        Some(key) => root.into_iter().filter(|(k, _)| *k != key).collect(),
    };
    Ok(Found {
        tensors,
        under,
        extras,
    })
}

/// A dict's entries with string keys; `None` for anything else (or a dict with other keys).
pub fn dict_entries(pickle: &Pickle, id: ValueId) -> Option<Vec<(&str, ValueId)>> {
    let Value::Dict(entries) = pickle.get(id) else {
        return None;
    };
    entries
        .iter()
        .map(|(k, v)| pickle.str(*k).map(|k| (k, *v)))
        .collect()
}

/// A LayerNorm's parameters: `weight` and `bias`, both `[width]`, no running statistics.
#[derive(Clone, Copy, Debug)]
pub struct LayerNorm<'p> {
    /// γ
    pub weight: &'p Tensor,
    /// β
    pub bias: &'p Tensor,
}

/// A Linear's parameters: `weight` `[outputs, inputs]`, `bias` `[outputs]` (absent for
/// `bias=False`).
#[derive(Clone, Copy, Debug)]
pub struct Linear<'p> {
    /// `[outputs, inputs]`
    pub weight: &'p Tensor,
    /// `[outputs]`
    pub bias: Option<&'p Tensor>,
}

/// A BatchNorm1d's parameters: `running_mean`, `running_var` (and `weight`, `bias` unless
/// `affine=False`); `num_batches_tracked` is ignored.
#[derive(Clone, Copy, Debug)]
pub struct BatchNorm<'p> {
    /// γ, absent for `affine=False`.
    pub weight: Option<&'p Tensor>,
    /// β, absent for `affine=False`.
    pub bias: Option<&'p Tensor>,
    /// Running mean.
    pub mean: &'p Tensor,
    /// Running (unbiased) variance.
    pub var: &'p Tensor,
}

/// What one module of the state dict is, by the names and shapes of its tensors.
#[derive(Clone, Copy, Debug)]
pub enum Role<'p> {
    /// A LayerNorm.
    LayerNorm(LayerNorm<'p>),
    /// A Linear.
    Linear(Linear<'p>),
    /// A BatchNorm1d.
    BatchNorm(BatchNorm<'p>),
}

impl<'p> From<LayerNorm<'p>> for Role<'p> {
    fn from(params: LayerNorm<'p>) -> Self {
        Role::LayerNorm(params)
    }
}

impl<'p> From<Linear<'p>> for Role<'p> {
    fn from(params: Linear<'p>) -> Self {
        Role::Linear(params)
    }
}

impl<'p> From<BatchNorm<'p>> for Role<'p> {
    fn from(params: BatchNorm<'p>) -> Self {
        Role::BatchNorm(params)
    }
}

/// A module of the state dict: its path (`hidden.0`, `3`, `fc1`) and its role: any [`Role`]
/// while the state dict is read, one known kind once [`arrange`] has placed it.
#[derive(Clone, Copy, Debug)]
pub struct Module<'p, R = Role<'p>> {
    /// Everything before the tensor's own name.
    pub path: &'p str,
    /// What it is.
    pub role: R,
}

impl<'p, R: Copy + Into<Role<'p>>> Module<'p, R> {
    /// This module as one of any role.
    fn any(&self) -> Module<'p> {
        Module {
            path: self.path,
            role: self.role.into(),
        }
    }
}

impl Module<'_> {
    /// The width a LayerNorm or BatchNorm normalizes, or a Linear's `(outputs, inputs)`.
    fn describe(&self) -> String {
        let path = if self.path.is_empty() {
            "(root)".to_owned()
        } else if self.path.chars().count() > 64 {
            format!("{}...", self.path.chars().take(64).collect::<String>())
        } else {
            self.path.to_owned()
        };
        // Widths come from shapes not yet checked (a 0-d running_mean is possible), so a shape
        // of the wrong rank is shown as it is rather than indexed.
        let width = |shape: &[u64]| match shape {
            [width] => width.to_string(),
            other => format!("shape {other:?}"),
        };
        match &self.role {
            Role::LayerNorm(LayerNorm { weight, .. }) => {
                format!("{path}: LayerNorm({})", width(&weight.shape))
            }
            Role::Linear(Linear { weight, .. }) => match weight.shape[..] {
                [outputs, inputs] => format!("{path}: Linear({inputs}→{outputs})"),
                ref other => format!("{path}: Linear(shape {other:?})"),
            },
            Role::BatchNorm(BatchNorm { mean, .. }) => {
                format!("{path}: BatchNorm1d({})", width(&mean.shape))
            }
        }
    }
}

/// The model's modules in order, each given a role.
pub struct Layers<'p> {
    /// The input LayerNorm.
    pub input_norm: Module<'p, LayerNorm<'p>>,
    /// `(Linear, BatchNorm)` of each hidden block.
    pub blocks: Vec<(Module<'p, Linear<'p>>, Module<'p, BatchNorm<'p>>)>,
    /// The `Linear(_ → 1)` before the sigmoid.
    pub output: Module<'p, Linear<'p>>,
    /// Tensors that play no part (`num_batches_tracked`).
    pub ignored: Vec<&'p str>,
}

impl fmt::Display for Layers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.input_norm.any().describe())?;
        for (linear, norm) in &self.blocks {
            write!(
                f,
                " → {} + {}",
                linear.any().describe(),
                norm.any().describe()
            )?;
        }
        write!(f, " → {}", self.output.any().describe())
    }
}

/// Groups the state dict's tensors by module and gives each module its role.
pub fn modules<'p>(tensors: &[(&'p str, &'p Tensor)]) -> Result<(Vec<Module<'p>>, Vec<&'p str>)> {
    // Modules in order of first appearance, which is registration order: forward order for
    // nn.Sequential and for the usual `__init__`.
    let mut groups: Vec<(&str, Vec<(&str, &Tensor)>)> = Vec::new();
    for &(name, tensor) in tensors {
        let (path, param) = name.rsplit_once('.').unwrap_or(("", name));
        match groups.iter_mut().find(|(p, _)| *p == path) {
            Some((_, params)) => params.push((param, tensor)),
            None => groups.push((path, vec![(param, tensor)])),
        }
    }
    let mut ignored = Vec::new();
    let mut modules = Vec::with_capacity(groups.len());
    for (path, params) in groups {
        let get = |wanted: &str| params.iter().find(|(p, _)| *p == wanted).map(|(_, t)| *t);
        let mut names: Vec<&str> = params.iter().map(|(p, _)| *p).collect();
        names.sort_unstable();
        let role = match names[..] {
            ["bias", "weight"] | ["weight"] => {
                let weight = get("weight").expect("listed");
                match weight.shape.len() {
                    2 => Role::Linear(Linear {
                        weight,
                        bias: get("bias"),
                    }),
                    1 if names.len() == 2 => Role::LayerNorm(LayerNorm {
                        weight,
                        bias: get("bias").expect("listed"),
                    }),
                    _ => {
                        return Err(Error::model_invalid(format!(
                            "module {path:?}: weight of shape {:?} is neither a Linear's nor a \
                             LayerNorm's",
                            weight.shape
                        )))
                    }
                }
            }
            ["bias", "num_batches_tracked", "running_mean", "running_var", "weight"]
            | ["bias", "running_mean", "running_var", "weight"]
            | ["num_batches_tracked", "running_mean", "running_var"]
            | ["running_mean", "running_var"] => {
                if get("num_batches_tracked").is_some() {
                    ignored.push(path);
                }
                Role::BatchNorm(BatchNorm {
                    weight: get("weight"),
                    bias: get("bias"),
                    mean: get("running_mean").expect("listed"),
                    var: get("running_var").expect("listed"),
                })
            }
            _ => {
                return Err(Error::model_invalid(format!(
                    "module {path:?} has tensors {names:?}: not a LayerNorm, Linear or \
                     BatchNorm1d, which are all this model is made of"
                )))
            }
        };
        modules.push(Module { path, role });
    }
    Ok((modules, ignored))
}

/// Puts the modules into the model's shape: LayerNorm, then (Linear, BatchNorm) blocks, then
/// Linear(→1), checking every width against its neighbour.
pub fn arrange<'p>(modules: Vec<Module<'p>>, ignored: Vec<&'p str>) -> Result<Layers<'p>> {
    // The first few modules: the message stays one readable line (4,096 modules of 3,900-character
    // names made a line of 16 MB).
    let listing = || {
        const SHOWN: usize = 20;
        let mut shown: Vec<String> = modules.iter().take(SHOWN).map(Module::describe).collect();
        if modules.len() > SHOWN {
            shown.push(format!("and {} more", modules.len() - SHOWN));
        }
        shown.join(", ")
    };
    let fail = |why: String| {
        Error::model_invalid(format!(
            "{why}; expected LayerNorm, then Linear + BatchNorm1d blocks, then Linear(→1); \
             found: {}",
            listing()
        ))
    };
    if modules.len() < 4 || !modules.len().is_multiple_of(2) {
        return Err(fail(format!("{} modules with weights", modules.len())));
    }
    let Role::LayerNorm(input_norm) = modules[0].role else {
        return Err(fail("the first module is not a LayerNorm".into()));
    };
    let LayerNorm { weight, bias } = input_norm;
    let [input_dim] = weight.shape[..] else {
        return Err(fail(
            "the first module's weight is not one-dimensional".into(),
        ));
    };
    check_shape(&modules[0], "bias", bias, &[input_dim])?;
    let mut width = input_dim;
    let mut blocks = Vec::new();
    let last = modules.len() - 1;
    for pair in modules[1..last].chunks_exact(2) {
        let (linear, norm) = (&pair[0], &pair[1]);
        let Role::Linear(linear_params) = linear.role else {
            return Err(fail(format!("{} is not a Linear", linear.describe())));
        };
        let Linear { weight, bias } = linear_params;
        let [outputs, inputs] = weight.shape[..] else {
            return Err(fail(format!(
                "{} is not two-dimensional",
                linear.describe()
            )));
        };
        if inputs != width {
            return Err(fail(format!(
                "{} does not take the {width} values before it",
                linear.describe()
            )));
        }
        if let Some(bias) = bias {
            check_shape(linear, "bias", bias, &[outputs])?;
        }
        let Role::BatchNorm(norm_params) = norm.role else {
            // A BatchNorm without its buffers looks like a LayerNorm: say what is likely wrong.
            let hint = if matches!(norm.role, Role::LayerNorm { .. }) {
                " (it has no running_mean/running_var: were only the parameters saved? \
                 save model.state_dict(), which holds the buffers too)"
            } else {
                ""
            };
            return Err(fail(format!(
                "{} does not follow {} as a BatchNorm1d{hint}",
                norm.describe(),
                linear.describe()
            )));
        };
        let BatchNorm {
            weight,
            bias,
            mean,
            var,
        } = norm_params;
        for (name, tensor) in [("weight", weight), ("bias", bias)] {
            if let Some(tensor) = tensor {
                check_shape(norm, name, tensor, &[outputs])?;
            }
        }
        check_shape(norm, "running_mean", mean, &[outputs])?;
        check_shape(norm, "running_var", var, &[outputs])?;
        blocks.push((
            Module {
                path: linear.path,
                role: linear_params,
            },
            Module {
                path: norm.path,
                role: norm_params,
            },
        ));
        width = outputs;
    }
    let output = &modules[last];
    let Role::Linear(output_params) = output.role else {
        return Err(fail(format!(
            "the last module {} is not a Linear",
            output.describe()
        )));
    };
    let Linear { weight, bias } = output_params;
    if weight.shape[..] != [1, width] {
        return Err(fail(format!(
            "the last module {} is not Linear({width}→1)",
            output.describe()
        )));
    }
    if let Some(bias) = bias {
        check_shape(output, "bias", bias, &[1])?;
    }
    Ok(Layers {
        input_norm: Module {
            path: modules[0].path,
            role: input_norm,
        },
        blocks,
        output: Module {
            path: output.path,
            role: output_params,
        },
        ignored,
    })
}

fn check_shape(module: &Module<'_>, name: &str, tensor: &Tensor, shape: &[u64]) -> Result<()> {
    if tensor.shape != shape {
        return Err(Error::model_invalid(format!(
            "{}: {name} has shape {:?}; expected {shape:?}",
            module.describe(),
            tensor.shape
        )));
    }
    Ok(())
}

/// What the nn.Sequential indices say about the BatchNorm/ReLU order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inferred {
    /// Every block agrees.
    Order(NormOrder, String),
    /// No block has a Linear and a BatchNorm numbered in the same nn.Sequential.
    Unknown,
    /// Blocks disagree; the message says which.
    Conflict(String),
}

/// Reads the order from nn.Sequential indices: a BatchNorm right after its Linear (index gap 1)
/// is Linear → BatchNorm → ReLU; a gap means parameterless modules between them, read as the
/// ReLU (Linear → ReLU → BatchNorm). Dropout sits after the block in the usual layouts and does
/// not shift the gap; a Dropout between a Linear and its BatchNorm would, which is what
/// `--norm-order` is for.
pub fn infer_norm_order(layers: &Layers<'_>) -> Inferred {
    let index = |path: &str| -> Option<(String, u64)> {
        let (parent, last) = path.rsplit_once('.').unwrap_or(("", path));
        Some((parent.to_owned(), last.parse().ok()?))
    };
    let mut seen: Vec<(NormOrder, String)> = Vec::new();
    for (linear, norm) in &layers.blocks {
        let (Some((lp, li)), Some((np, ni))) = (index(linear.path), index(norm.path)) else {
            continue;
        };
        if lp != np || ni <= li {
            continue;
        }
        let gap = ni - li;
        let order = if gap == 1 {
            NormOrder::LinearBnRelu
        } else {
            NormOrder::LinearReluBn
        };
        seen.push((
            order,
            format!(
                "Linear {} and BatchNorm {} are {gap} apart",
                linear.path, norm.path
            ),
        ));
    }
    match seen.first() {
        None => Inferred::Unknown,
        Some((first, _)) if seen.iter().all(|(o, _)| o == first) => {
            let why: Vec<&str> = seen.iter().map(|(_, w)| w.as_str()).collect();
            Inferred::Order(*first, why.join("; "))
        }
        Some(_) => Inferred::Conflict(
            seen.iter()
                .map(|(o, w)| format!("{w} ({})", o.as_str()))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}
