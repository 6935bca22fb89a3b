using System;
using System.Runtime.InteropServices;
using System.Text;

namespace GemmaCyber
{
    /// <summary>The C API (include/gemma_cyber.h), one declaration per function.</summary>
    internal static class NativeMethods
    {
        private const string Library = "gemma_cyber";

        /// <summary>gemma_cyber_options, field for field. Enums are plain integers here so an
        /// unknown value reaches the library, which refuses it.</summary>
        [StructLayout(LayoutKind.Sequential)]
        internal struct NativeOptions
        {
            public uint StructSize;
            public uint Backend;
            public IntPtr ModelPath;
            public IntPtr ModelData;
            public UIntPtr ModelDataLen;
            public float Threshold;
            public uint NumThreads;
            public IntPtr OnnxRuntimeLibrary;
            public IntPtr ModelSha256;
            public IntPtr PluginDir;
            public IntPtr PluginName;
            public IntPtr PluginSettings;
        }

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern void gemma_cyber_options_init(ref NativeOptions options, UIntPtr structSize);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status gemma_cyber_create(ref NativeOptions options, out ClassifierHandle classifier);

        // Arrays of blittable types are pinned for the call and passed as pointers; null is NULL.
        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status gemma_cyber_classify(ClassifierHandle classifier, float[] embeddings,
            UIntPtr rows, UIntPtr dim, float[] probabilities, byte[] labels);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern void gemma_cyber_destroy(IntPtr classifier);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr gemma_cyber_last_error();

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint gemma_cyber_active_backend(ClassifierHandle classifier);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr gemma_cyber_device_name(ClassifierHandle classifier);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern UIntPtr gemma_cyber_input_dim(ClassifierHandle classifier);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr gemma_cyber_version();

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern uint gemma_cyber_abi_version();

        /// <summary>gemma_cyber_log_callback. The level is a plain integer so that a level newer
        /// than these bindings still arrives; the message is a NUL-terminated UTF-8 string valid
        /// during the call only.</summary>
        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        internal delegate void LogCallback(IntPtr userData, uint level, IntPtr message);

        // A delegate is marshalled as a function pointer to a thunk that lives only as long as
        // the delegate: the caller must keep it referenced for as long as it is registered. Null
        // is NULL.
        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        internal static extern void gemma_cyber_set_log_callback(LogCallback callback, IntPtr userData);

        /// <summary>Throws for a failed status. Must run on the thread that made the failing call,
        /// right after it: the library's last error is per thread.</summary>
        internal static void Check(Status status)
        {
            if (status != Status.Ok)
            {
                throw new GemmaCyberException(status, FromUtf8(gemma_cyber_last_error()));
            }
        }

        /// <summary>A NUL-terminated UTF-8 string owned by the library, copied.</summary>
        // Marshal.PtrToStringUTF8 is missing from netstandard2.0 and older Mono.
        internal static string FromUtf8(IntPtr text)
        {
            if (text == IntPtr.Zero)
            {
                return "";
            }
            int length = 0;
            while (Marshal.ReadByte(text, length) != 0)
            {
                length++;
            }
            byte[] bytes = new byte[length];
            Marshal.Copy(text, bytes, 0, length);
            return Encoding.UTF8.GetString(bytes);
        }

        /// <summary>UTF-8 that refuses what it cannot encode instead of replacing it.</summary>
        private static readonly UTF8Encoding StrictUtf8 = new UTF8Encoding(false, true);

        /// <summary>A NUL-terminated UTF-8 copy of <paramref name="text"/> in unmanaged memory
        /// (free it with Marshal.FreeHGlobal); IntPtr.Zero for null. A NUL inside the text is
        /// refused (INVALID_ARGUMENT naming <paramref name="field"/>): the library would read only
        /// the part before it, so "real.safetensors\0junk" would silently load real.safetensors.</summary>
        internal static IntPtr ToUtf8(string field, string text)
        {
            if (text == null)
            {
                return IntPtr.Zero;
            }
            if (text.IndexOf('\0') >= 0)
            {
                throw GemmaCyberException.InvalidArgument(field + " contains a NUL byte");
            }
            byte[] bytes;
            try
            {
                bytes = StrictUtf8.GetBytes(text);
            }
            catch (EncoderFallbackException)
            {
                // Encoding.UTF8 would write U+FFFD for it: another name, which may be another file.
                throw GemmaCyberException.InvalidArgument(field + " is not valid text: it holds a lone surrogate");
            }
            IntPtr copy = Marshal.AllocHGlobal(bytes.Length + 1);
            Marshal.Copy(bytes, 0, copy, bytes.Length);
            Marshal.WriteByte(copy, bytes.Length, 0);
            return copy;
        }
    }
}
