using System;
using System.Runtime.InteropServices;
using System.Threading;

namespace GemmaCyber
{
    /// <summary>
    /// A loaded model bound to a backend: classifies text embeddings as cyber-related or not.
    /// Classify and the properties may be called from many threads at once; Dispose waits for calls
    /// in progress and later calls throw <see cref="ObjectDisposedException"/>. Failures throw
    /// <see cref="GemmaCyberException"/> with the library's status and message.
    /// </summary>
    public sealed class Classifier : IDisposable
    {
        /// <summary>The C ABI version these bindings are written against.</summary>
        public const uint AbiVersion = 1;

        private readonly ClassifierHandle handle;

        /// <summary>The built-in model on the backend the library picks.</summary>
        public Classifier() : this(new Options())
        {
        }

        /// <summary>Loads the model <paramref name="options"/> names on the backend it asks for.</summary>
        /// <exception cref="GemmaCyberException">The model or backend cannot be loaded.</exception>
        public Classifier(Options options)
        {
            if (options == null)
            {
                throw new ArgumentNullException(nameof(options));
            }
            var native = new NativeMethods.NativeOptions();
            NativeMethods.gemma_cyber_options_init(ref native, (UIntPtr)Marshal.SizeOf(typeof(NativeMethods.NativeOptions)));
            native.Backend = (uint)options.Backend;
            // NaN is how the C API says "the model's own": given here it would pass silently.
            if (options.Threshold.HasValue && float.IsNaN(options.Threshold.Value))
            {
                throw GemmaCyberException.InvalidArgument("Threshold is NaN; pass null for the model's own");
            }
            // Checked here too, so the message names this binding's "model's own" (null), not the
            // C API's NaN.
            if (options.Threshold.HasValue && !(options.Threshold.Value >= 0 && options.Threshold.Value <= 1))
            {
                throw GemmaCyberException.InvalidArgument(string.Format(
                    "Threshold is {0}; expected a number in [0, 1], or null for the model's own",
                    options.Threshold.Value.ToString("R", System.Globalization.CultureInfo.InvariantCulture)));
            }
            native.Threshold = options.Threshold ?? float.NaN;
            native.NumThreads = options.NumThreads;
            if (options.ModelSha256 != null && options.ModelSha256.Length != 32)
            {
                throw GemmaCyberException.InvalidArgument(
                    "ModelSha256 has " + options.ModelSha256.Length + " bytes; a SHA-256 has 32");
            }
            GCHandle modelData = default(GCHandle);
            GCHandle modelSha256 = default(GCHandle);
            IntPtr[] settings = null;
            try
            {
                if (options.ModelSha256 != null)
                {
                    modelSha256 = GCHandle.Alloc(options.ModelSha256, GCHandleType.Pinned);
                    native.ModelSha256 = modelSha256.AddrOfPinnedObject();
                }
                native.ModelPath = NativeMethods.ToUtf8("ModelPath", options.ModelPath);
                native.OnnxRuntimeLibrary = NativeMethods.ToUtf8("OnnxRuntimeLibrary", options.OnnxRuntimeLibrary);
                native.PluginDir = NativeMethods.ToUtf8("PluginDir", options.PluginDir);
                native.PluginName = NativeMethods.ToUtf8("PluginName", options.PluginName);
                if (options.PluginSettings != null)
                {
                    // A NULL-terminated array of UTF-8 strings in unmanaged memory.
                    settings = new IntPtr[options.PluginSettings.Length];
                    for (int i = 0; i < settings.Length; i++)
                    {
                        string field = "PluginSettings[" + i + "]";
                        // A null entry would become the NULL that ends the C array, silently
                        // dropping every later setting.
                        if (options.PluginSettings[i] == null)
                        {
                            throw GemmaCyberException.InvalidArgument(field + " is null; every entry must be a \"key=value\" string");
                        }
                        settings[i] = NativeMethods.ToUtf8(field, options.PluginSettings[i]);
                    }
                    native.PluginSettings = Marshal.AllocHGlobal(IntPtr.Size * (settings.Length + 1));
                    for (int i = 0; i < settings.Length; i++)
                    {
                        Marshal.WriteIntPtr(native.PluginSettings, i * IntPtr.Size, settings[i]);
                    }
                    Marshal.WriteIntPtr(native.PluginSettings, settings.Length * IntPtr.Size, IntPtr.Zero);
                }
                if (options.ModelData != null)
                {
                    // Pinned only for the call: the library copies the model.
                    modelData = GCHandle.Alloc(options.ModelData, GCHandleType.Pinned);
                    native.ModelData = modelData.AddrOfPinnedObject();
                    native.ModelDataLen = (UIntPtr)options.ModelData.Length;
                }
                ClassifierHandle created;
                NativeMethods.Check(NativeMethods.gemma_cyber_create(ref native, out created));
                created.Track();
                handle = created;
            }
            finally
            {
                if (modelData.IsAllocated)
                {
                    modelData.Free();
                }
                if (modelSha256.IsAllocated)
                {
                    modelSha256.Free();
                }
                Marshal.FreeHGlobal(native.ModelPath);
                Marshal.FreeHGlobal(native.OnnxRuntimeLibrary);
                Marshal.FreeHGlobal(native.PluginDir);
                Marshal.FreeHGlobal(native.PluginName);
                if (settings != null)
                {
                    foreach (IntPtr setting in settings)
                    {
                        Marshal.FreeHGlobal(setting);
                    }
                }
                Marshal.FreeHGlobal(native.PluginSettings);
            }
        }

        /// <summary>The library's version, e.g. "0.1.0".</summary>
        public static string Version => NativeMethods.FromUtf8(NativeMethods.gemma_cyber_version());

        /// <summary>The C ABI version of the library actually loaded.</summary>
        public static uint LibraryAbiVersion => NativeMethods.gemma_cyber_abi_version();

        /// <summary>Guards <see cref="registeredLogCallback"/> and orders SetLogCallback calls.</summary>
        private static readonly object logCallbackLock = new object();

        /// <summary>The delegate the library holds as a function pointer, kept reachable for as
        /// long as it is registered: were it collected, the library would call freed memory.</summary>
        private static NativeMethods.LogCallback registeredLogCallback;

        /// <summary>Whether this thread is inside the log callback, where SetLogCallback is
        /// refused: the library would keep the callback it is running, while this side let go
        /// of its delegate, which the collector would then free under the library.</summary>
        [ThreadStatic]
        private static bool insideLogCallback;

        /// <summary>
        /// Sends the library's log messages to <paramref name="callback"/>: which backend
        /// <see cref="Backend.Auto"/> picked and why it passed over the others ("AUTO skipped the
        /// ... backend: ..."), "... backend started on ..." for every classifier created, plugin
        /// files that cannot be used. Null (the default) turns them off; the library never writes
        /// to stderr. One callback per process: a later call replaces it, and returns only once
        /// every running call of the replaced callback has returned.
        /// </summary>
        /// <remarks>
        /// The callback receives the level and a one-line message. It may be called on any thread
        /// the library runs on, also on several at once, so it must be thread-safe; it must not
        /// call into this library (no Classifier; SetLogCallback throws InvalidArgument there) and
        /// should return quickly, as
        /// the library's call waits for it. An exception it throws is caught and dropped: it
        /// cannot unwind into native code, and the library's call carries on as if the callback
        /// had returned. That includes a <see cref="ThreadAbortException"/> (Thread.Abort on the
        /// callback's thread): the abort is cancelled with <see cref="Thread.ResetAbort"/>, so the
        /// thread is not aborted and goes on with the library's call.
        /// </remarks>
        /// <param name="callback">Receives each message; null turns messages off.</param>
        public static void SetLogCallback(Action<LogLevel, string> callback)
        {
            if (insideLogCallback)
            {
                throw GemmaCyberException.InvalidArgument("SetLogCallback called from inside the log callback");
            }
            NativeMethods.LogCallback native = null;
            if (callback != null)
            {
                native = (userData, level, message) => DeliverLog(callback, level, message);
            }
            lock (logCallbackLock)
            {
                // The new delegate is registered before the old one is let go: once the call
                // returns the library has finished every call of the old one, which may then be
                // collected.
                NativeMethods.LogCallback replaced = registeredLogCallback;
                NativeMethods.gemma_cyber_set_log_callback(native, IntPtr.Zero);
                registeredLogCallback = native;
                GC.KeepAlive(replaced);
            }
        }

        /// <summary>The trampoline the library calls: decodes the message and hands it to the
        /// user's callback, which must not let an exception unwind into native code.</summary>
        private static void DeliverLog(Action<LogLevel, string> callback, uint level, IntPtr message)
        {
            insideLogCallback = true;
            try
            {
                callback((LogLevel)level, NativeMethods.FromUtf8(message));
            }
            catch (ThreadAbortException)
            {
                // Mono raises a ThreadAbortException again at the end of every catch block, so it
                // would unwind through the library's frames and leave its lock held, hanging every
                // later create and SetLogCallback. Cancelled instead, as SetLogCallback documents.
                Thread.ResetAbort();
            }
            catch
            {
                // Dropped, as SetLogCallback documents: native frames are on the stack above us.
            }
            finally
            {
                insideLogCallback = false;
            }
        }

        /// <summary>The backend the classifier runs on (never Auto).</summary>
        public Backend Backend => (Backend)NativeMethods.gemma_cyber_active_backend(handle);

        /// <summary>The device the classifier runs on, for people.</summary>
        /// <exception cref="ObjectDisposedException">The classifier is disposed.</exception>
        public string DeviceName
        {
            get
            {
                // The string belongs to the classifier, and the P/Invoke marshaller's hold on the
                // handle ends when the call returns, before the copy: a Dispose on another thread
                // in between would free it under FromUtf8. Holding a reference of our own across
                // the call and the copy makes that Dispose wait (DangerousAddRef throws
                // ObjectDisposedException once the handle is closed).
                bool added = false;
                try
                {
                    handle.DangerousAddRef(ref added);
                    return NativeMethods.FromUtf8(NativeMethods.gemma_cyber_device_name(handle));
                }
                finally
                {
                    if (added)
                    {
                        handle.DangerousRelease();
                    }
                }
            }
        }

        /// <summary>The model's input dimension: the dim Classify expects.</summary>
        public int InputDim => checked((int)(ulong)NativeMethods.gemma_cyber_input_dim(handle));

        /// <summary>Classifies embeddings.Length / dim row-major embeddings of dim floats each and
        /// returns one probability per row. An empty array gives an empty result.</summary>
        /// <exception cref="GemmaCyberException">Bad input (status says which); nothing is returned.</exception>
        public float[] Classify(float[] embeddings, int dim)
        {
            int rows = RowCount(embeddings, dim);
            var probabilities = new float[rows];
            Run(embeddings, rows, dim, probabilities, null);
            return probabilities;
        }

        /// <summary>Like <see cref="Classify(float[], int)"/>, also returning one label per row
        /// (true: cyber, i.e. probability &gt;= the threshold).</summary>
        public float[] Classify(float[] embeddings, int dim, out bool[] labels)
        {
            int rows = RowCount(embeddings, dim);
            var probabilities = new float[rows];
            var bytes = new byte[rows];
            Run(embeddings, rows, dim, probabilities, bytes);
            labels = Array.ConvertAll(bytes, b => b != 0);
            return probabilities;
        }

        /// <summary>Like <see cref="Classify(float[], int)"/>, writing into the caller's arrays:
        /// one probability per row into <paramref name="probabilities"/> and, unless it is null,
        /// one label (1: cyber, 0: not) per row into <paramref name="labels"/>. Nothing is written
        /// on failure.</summary>
        public void ClassifyInto(float[] embeddings, int dim, float[] probabilities, byte[] labels)
        {
            int rows = RowCount(embeddings, dim);
            if (probabilities == null || probabilities.Length < rows || (labels != null && labels.Length < rows))
            {
                throw GemmaCyberException.InvalidArgument(string.Format(
                    "the output arrays hold {0} probabilities and {1} labels; {2} rows need {2} each",
                    probabilities == null ? 0 : probabilities.Length, labels == null ? 0 : labels.Length, rows));
            }
            Run(embeddings, rows, dim, probabilities, labels);
        }

        /// <summary>Frees the library's classifier now rather than at finalization.</summary>
        public void Dispose()
        {
            handle.Dispose();
        }

        private static int RowCount(float[] embeddings, int dim)
        {
            if (embeddings == null)
            {
                throw GemmaCyberException.InvalidArgument("embeddings is null");
            }
            if (dim <= 0 || embeddings.Length % dim != 0)
            {
                throw GemmaCyberException.InvalidArgument(string.Format(
                    "embeddings.Length is {0}, not a whole number of rows of dim {1}", embeddings.Length, dim));
            }
            return embeddings.Length / dim;
        }

        private void Run(float[] embeddings, int rows, int dim, float[] probabilities, byte[] labels)
        {
            if (handle.IsClosed)
            {
                throw new ObjectDisposedException(nameof(Classifier));
            }
            // The P/Invoke call and the last-error read both run on this thread.
            NativeMethods.Check(NativeMethods.gemma_cyber_classify(
                handle, embeddings, (UIntPtr)rows, (UIntPtr)dim, probabilities, labels));
        }
    }
}
