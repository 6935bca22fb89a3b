namespace GemmaCyber
{
    /// <summary>Options for <see cref="Classifier"/>. The defaults are the built-in model on the
    /// backend the library picks, with the model's own threshold.</summary>
    public sealed class Options
    {
        /// <summary>Backend to run on; <see cref="GemmaCyber.Backend.Auto"/> lets the library choose.</summary>
        public Backend Backend { get; set; } = Backend.Auto;

        /// <summary>A safetensors model file; null (and no <see cref="ModelData"/>): the built-in model.</summary>
        public string ModelPath { get; set; }

        /// <summary>A whole safetensors model in memory; copied when the classifier is created.</summary>
        public byte[] ModelData { get; set; }

        /// <summary>label = probability &gt;= Threshold, in [0, 1] (NaN is refused); null: the model's own.</summary>
        public float? Threshold { get; set; }

        /// <summary>Threads a backend may use per call; 0: the library decides.</summary>
        public uint NumThreads { get; set; }

        /// <summary>Path of ONNX Runtime's shared library; null: GEMMA_CYBER_ONNXRUNTIME_LIB, then the usual search.</summary>
        public string OnnxRuntimeLibrary { get; set; }

        /// <summary>The SHA-256 the model file must have (32 bytes); null: not checked. A mismatch is
        /// <see cref="Status.ModelInvalid"/> and nothing is loaded.</summary>
        public byte[] ModelSha256 { get; set; }

        /// <summary>Searched first for backend plugins (libgemma_cyber_&lt;name&gt;.so); null: only
        /// GEMMA_CYBER_PLUGIN_DIR and the library's own directory.</summary>
        public string PluginDir { get; set; }

        /// <summary>The plugin to run with <see cref="GemmaCyber.Backend.Plugin"/>, e.g. "example_c".</summary>
        public string PluginName { get; set; }

        /// <summary>"key=value" settings for plugins; a key prefixed with a plugin's name and a dot
        /// ("wgpu.adapter=NVIDIA") reaches only that plugin. Null: none.</summary>
        public string[] PluginSettings { get; set; }
    }
}
