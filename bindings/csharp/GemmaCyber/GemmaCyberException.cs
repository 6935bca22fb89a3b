using System;

namespace GemmaCyber
{
    /// <summary>A failed call: its <see cref="Status"/> and the library's message
    /// ("GEMMA_CYBER_STATUS_NAME: message").</summary>
    [Serializable]
    public sealed class GemmaCyberException : Exception
    {
        /// <summary>What failed.</summary>
        public Status Status { get; }

        /// <summary>An exception with <paramref name="status"/> and <paramref name="message"/>.</summary>
        public GemmaCyberException(Status status, string message) : base(message)
        {
            Status = status;
        }

        /// <summary>An exception for a failure found on the managed side, worded like the library's own.</summary>
        internal static GemmaCyberException InvalidArgument(string message)
        {
            return new GemmaCyberException(Status.InvalidArgument, "GEMMA_CYBER_STATUS_INVALID_ARGUMENT: " + message);
        }
    }
}
