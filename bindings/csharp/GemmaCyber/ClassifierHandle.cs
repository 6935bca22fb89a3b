using System;
using System.Threading;
using Microsoft.Win32.SafeHandles;

namespace GemmaCyber
{
    /// <summary>Owns one gemma_cyber_classifier. The runtime's reference counting on SafeHandle
    /// keeps it alive while any P/Invoke call uses it, so Dispose never frees it under a running
    /// classify (which the C API forbids), and its critical finalizer frees a forgotten one.</summary>
    internal sealed class ClassifierHandle : SafeHandleZeroOrMinusOneIsInvalid
    {
        private static int live;

        /// <summary>Classifiers created and not yet destroyed; lets the tests prove none leak.</summary>
        internal static int LiveCount => Volatile.Read(ref live);

        // Called by the P/Invoke marshaller for gemma_cyber_create's out parameter.
        private ClassifierHandle() : base(true)
        {
        }

        /// <summary>Counts a handle the library filled in.</summary>
        internal void Track()
        {
            Interlocked.Increment(ref live);
        }

        /// <inheritdoc />
        protected override bool ReleaseHandle()
        {
            NativeMethods.gemma_cyber_destroy(handle);
            Interlocked.Decrement(ref live);
            return true;
        }
    }
}
