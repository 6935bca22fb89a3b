using System.Runtime.CompilerServices;

// The tests check ClassifierHandle.LiveCount to prove Dispose and the finalizer free every handle.
[assembly: InternalsVisibleTo("GemmaCyber.Tests")]
