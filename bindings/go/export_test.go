package gemmacyber

// LiveHandles lets the tests see how many C classifiers are not yet destroyed.
func LiveHandles() int64 { return liveHandles.Load() }
