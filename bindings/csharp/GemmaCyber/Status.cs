namespace GemmaCyber
{
    /// <summary>Result code of a failed call; the values are the C API's gemma_cyber_status.</summary>
    public enum Status : uint
    {
        /// <summary>Success; never inside a <see cref="GemmaCyberException"/>.</summary>
        Ok = 0,
        /// <summary>A null or bad argument, a size that overflows, or bad options.</summary>
        InvalidArgument = 1,
        /// <summary>dim is not the model's input dim.</summary>
        DimensionMismatch = 2,
        /// <summary>NaN or infinity in the embeddings.</summary>
        NonFiniteInput = 3,
        /// <summary>The model file cannot be opened.</summary>
        ModelNotFound = 4,
        /// <summary>The model is malformed or inconsistent.</summary>
        ModelInvalid = 5,
        /// <summary>The backend cannot run here (no ONNX Runtime library, no GPU adapter).</summary>
        BackendUnavailable = 6,
        /// <summary>The backend failed while running.</summary>
        BackendFailure = 7,
        /// <summary>An internal bug, caught at the C boundary.</summary>
        Panic = 8,
    }

    /// <summary>Which backend runs the model; the values are the C API's gemma_cyber_backend.</summary>
    public enum Backend : uint
    {
        /// <summary>A real GPU through wgpu, else ONNX Runtime, else cpu.</summary>
        Auto = 0,
        /// <summary>Plain Rust on the CPU; the reference.</summary>
        Cpu = 1,
        /// <summary>ONNX Runtime, loaded at run time.</summary>
        OnnxRuntime = 2,
        /// <summary>WGSL compute shaders through wgpu.</summary>
        Wgpu = 3,
        /// <summary>The plugin named by <see cref="Options.PluginName"/>.</summary>
        Plugin = 4,
    }

    /// <summary>How much a log message matters; the values are the C API's gemma_cyber_log_level.</summary>
    public enum LogLevel : uint
    {
        /// <summary>Something went wrong but the library carried on (e.g. a plugin file that
        /// cannot be used).</summary>
        Warning = 1,
        /// <summary>What the library decided (e.g. which backend Auto picked, and why others
        /// were skipped).</summary>
        Info = 2,
    }
}
