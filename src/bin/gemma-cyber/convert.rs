//! `gemma-cyber convert`: a PyTorch checkpoint (`model.pt`) to this library's safetensors model.
//! The work is `gemma_cyber::convert`; this reads the files, prints the report and writes.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use gemma_cyber::convert::{convert_checkpoint, ConvertOptions, MAX_CONFIG_BYTES};
use gemma_cyber::fs::ReadError;
use gemma_cyber::model::NormOrder;
use gemma_cyber::{Error, Status};

use crate::output::{self, refuse_unreplaceable_output, PartialOutput};
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
    refuse_output_over_input(&args.output, &args.checkpoint, "the checkpoint")?;
    refuse_unreplaceable_output(&args.output)?;
    let config_path = match (&args.config, args.no_config) {
        (Some(path), _) => Some(path.clone()),
        (None, true) => None,
        (None, false) => {
            Some(args.checkpoint.with_file_name("config.json")).filter(|p| p.is_file())
        }
    };
    if let Some(config) = &config_path {
        refuse_output_over_input(&args.output, config, "the config")?;
    }
    let bytes = read_input(&args.checkpoint, None)?;
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
        config_name: config_path
            .as_ref()
            .map_or_else(String::new, |path| path.display().to_string()),
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
pub(crate) fn read_input(path: &Path, limit: Option<u64>) -> Result<Vec<u8>, Failure> {
    let limit = limit.unwrap_or(gemma_cyber::convert::archive::MAX_CHECKPOINT_BYTES);
    gemma_cyber::fs::read_regular_file(path, limit).map_err(|e| {
        let status = match e {
            ReadError::Open(_) | ReadError::Read(_) => Status::ModelNotFound,
            ReadError::TooLarge { .. } | ReadError::OutOfMemory(_) => Status::ModelInvalid,
        };
        Error::new(status, format!("cannot read {}: {e}", path.display())).into()
    })
}

/// Writes `bytes` to `path` through a [`PartialOutput`], so a failed or killed write never leaves
/// half a model under its name, and removes what killed runs writing `path` left behind.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    // Exit code 1, as for any output that cannot be written.
    let cannot = |e: io::Error| Failure {
        message: format!("cannot write {}: {e}", path.display()),
        code: 1,
    };
    refuse_unreplaceable_output(path)?;
    // Before this run's own temporary exists, so that only others' are looked at.
    output::remove_leftovers(output::directory_of(path), Some(path));
    let partial = PartialOutput::create(path).map_err(cannot)?;
    partial.file().write_all(bytes).map_err(cannot)?;
    partial.sync().map_err(cannot)?;
    partial.rename_to(path).map_err(cannot)
}

/// A bad command line (exit 2, like clap's own refusals) when `output` names the same file as
/// `input` by any path: writing it would replace what is being read.
pub(crate) fn refuse_output_over_input(
    output: &Path,
    input: &Path,
    what: &str,
) -> Result<(), Failure> {
    if same_file(output, input) {
        return Err(Failure {
            message: format!("the output {} is {what} itself", output.display()),
            code: 2,
        });
    }
    Ok(())
}

/// True when both paths exist and are the same file or directory, whatever the links, `.` and
/// `..` on the way (a hard link too, where the platform tells).
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        matches!((std::fs::metadata(a), std::fs::metadata(b)), (Ok(a), Ok(b)) if (a.dev(), a.ino()) == (b.dev(), b.ino()))
    }
    #[cfg(not(unix))]
    {
        matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
    }
}
