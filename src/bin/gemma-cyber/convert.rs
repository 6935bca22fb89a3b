//! `gemma-cyber convert`: a PyTorch checkpoint (`model.pt`) to this library's safetensors model.
//! The work is `gemma_cyber::convert`; this reads the files, prints the report and writes.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use gemma_cyber::convert::{convert_checkpoint, ConvertOptions, MAX_CONFIG_BYTES};
use gemma_cyber::fs::ReadError;
use gemma_cyber::model::NormOrder;
use gemma_cyber::{Error, Status};

use crate::terminal::escape;
use crate::Failure;

/// Arguments of `convert`.
#[derive(Args)]
pub struct Convert {
    /// The checkpoint `torch.save` wrote (a state_dict, or a dict holding `model_state_dict` or
    /// `state_dict`). Nothing in it is executed.
    checkpoint: PathBuf,
    /// Where to write the safetensors model.
    #[arg(short, long)]
    output: PathBuf,
    /// Force the BatchNorm/ReLU order instead of taking it from config.json or inferring it
    /// from nn.Sequential indices.
    #[arg(long, value_enum)]
    norm_order: Option<Order>,
    /// A config.json to read instead of the one next to the checkpoint.
    #[arg(long, conflicts_with = "no_config")]
    config: Option<PathBuf>,
    /// Ignore any config.json next to the checkpoint.
    #[arg(long)]
    no_config: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Order {
    /// Linear → BatchNorm → ReLU.
    #[value(alias = "linear_bn_relu")]
    LinearBnRelu,
    /// Linear → ReLU → BatchNorm.
    #[value(alias = "linear_relu_bn")]
    LinearReluBn,
}

/// Runs `convert`.
pub fn run(args: &Convert) -> Result<(), Failure> {
    if same_file(&args.checkpoint, &args.output) {
        // A bad command line, like clap's own refusals.
        return Err(Failure {
            message: format!(
                "the output {} is the checkpoint itself",
                args.output.display()
            ),
            code: 2,
        });
    }
    let bytes = read_input(&args.checkpoint, None)?;
    let config_path = match (&args.config, args.no_config) {
        (Some(path), _) => Some(path.clone()),
        (None, true) => None,
        (None, false) => {
            Some(args.checkpoint.with_file_name("config.json")).filter(|p| p.is_file())
        }
    };
    let config_json = match &config_path {
        Some(path) => Some(read_input(path, Some(MAX_CONFIG_BYTES as u64))?),
        None => None,
    };
    let options = ConvertOptions {
        file_name: args
            .checkpoint
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        norm_order: args.norm_order.map(|order| match order {
            Order::LinearBnRelu => NormOrder::LinearBnRelu,
            Order::LinearReluBn => NormOrder::LinearReluBn,
        }),
        config_json,
    };
    let conversion =
        convert_checkpoint(&bytes, &options).map_err(|e| e.context(args.checkpoint.display()))?;

    let mut out = io::stdout().lock();
    let shown = |path: &Path| escape(&path.display().to_string()).into_owned();
    writeln!(out, "checkpoint: {}", shown(&args.checkpoint))?;
    match &config_path {
        Some(path) => writeln!(out, "config: {}", shown(path))?,
        None => writeln!(out, "config: none")?,
    }
    // The report names keys and modules from the checkpoint: data, never terminal commands.
    for line in &conversion.report {
        writeln!(out, "{}", escape(line))?;
    }
    write_atomically(&args.output, &conversion.safetensors)?;
    writeln!(out, "wrote: {}", shown(&args.output))?;
    Ok(())
}

/// A regular file of at most `limit` bytes (the checkpoint limit by default), read through that cap.
fn read_input(path: &Path, limit: Option<u64>) -> Result<Vec<u8>, Failure> {
    let limit = limit.unwrap_or(gemma_cyber::convert::archive::MAX_CHECKPOINT_BYTES);
    gemma_cyber::fs::read_regular_file(path, limit).map_err(|e| {
        let status = match e {
            ReadError::Open(_) | ReadError::Read(_) => Status::ModelNotFound,
            ReadError::TooLarge { .. } | ReadError::OutOfMemory(_) => Status::ModelInvalid,
        };
        Error::new(status, format!("cannot read {}: {e}", path.display())).into()
    })
}

/// Writes next to `path` and renames, so a failed write never leaves half a model behind.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".partial");
    let temp = PathBuf::from(temp);
    let result = std::fs::write(&temp, bytes).and_then(|()| std::fs::rename(&temp, path));
    result.map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        // Exit code 1, as for any output that cannot be written.
        Failure {
            message: format!("cannot write {}: {e}", path.display()),
            code: 1,
        }
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
