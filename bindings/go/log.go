package gemmacyber

/*
#include "gemma_cyber.h"

// Declared here (cgo defines it from the //export below) so that Go can hand its address to C. A
// file with an //export may only declare things in its preamble.
void gemmaCyberLogTrampoline(void *user_data, enum gemma_cyber_log_level level, char *message);
*/
import "C"

import (
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"unsafe"
)

// LogLevel says how much a log message matters; the values are the C API's gemma_cyber_log_level.
type LogLevel uint32

// The log levels of the C API, in its order.
const (
	LogLevelWarning LogLevel = 1 // something went wrong but the library carried on
	LogLevelInfo    LogLevel = 2 // what the library decided, e.g. which backend started
)

// String returns the level's lower-case name: warning, info.
func (l LogLevel) String() string {
	switch l {
	case LogLevelWarning:
		return "warning"
	case LogLevelInfo:
		return "info"
	}
	return fmt.Sprintf("LogLevel(%d)", uint32(l))
}

var (
	// logCallback is the Go func the trampoline hands messages to; nil: none. Atomic because the
	// library calls the trampoline from any thread, concurrently, without taking setLogCallback.
	logCallback atomic.Pointer[func(level LogLevel, message string)]
	// setLogCallback keeps concurrent SetLogCallback calls from registering with C in a different
	// order than they stored logCallback, which could leave a Go func set but the C side off.
	setLogCallback sync.Mutex
)

// SetLogCallback sends the library's messages to callback: which backend started on which device,
// why BackendAuto passed over a backend, plugin files that cannot be used. nil (the default) turns
// them off; the library never writes to stderr. callback may be called from any goroutine or OS
// thread, also concurrently, with a one-line message; it must not call into this package (New,
// Classify...; SetLogCallback returns an error there, with StatusInvalidArgument, and changes
// nothing), and it must return normally: it must not panic or call
// runtime.Goexit (which t.Fatal, t.FailNow and t.SkipNow do), because neither can unwind through
// the library's frames, which would be left holding a lock that every later New and SetLogCallback
// waits on. If it does, the program prints the reason and the stack to stderr and exits with status
// 2. One callback per process: a later call replaces it, and returns once calls of the callback it
// replaced have returned.
func SetLogCallback(callback func(level LogLevel, message string)) error {
	// Refused before the lock: a SetLogCallback running on another goroutine holds it while the
	// library waits for this very callback to return, so taking it here would hang both.
	if insideLogCallback() {
		return newError(StatusInvalidArgument, "SetLogCallback called from inside the log callback")
	}
	setLogCallback.Lock()
	defer setLogCallback.Unlock()
	if callback == nil {
		logCallback.Store(nil)
		// NULL rather than the trampoline with nothing to call, so the library stops formatting
		// messages at all.
		C.gemma_cyber_set_log_callback(nil, nil)
		return nil
	}
	logCallback.Store(&callback)
	// Registered again even when it already is: the library then waits for running calls, which may
	// have loaded the replaced Go func, so that none of them outlives this call. No user_data: the
	// trampoline reads logCallback.
	C.gemma_cyber_set_log_callback(nativeLogCallback(), nil)
	return nil
}

//export gemmaCyberLogTrampoline
func gemmaCyberLogTrampoline(_ unsafe.Pointer, level C.enum_gemma_cyber_log_level, message *C.char) {
	callback := logCallback.Load()
	if callback == nil {
		return
	}
	returned := false
	defer func() {
		// A panic or a runtime.Goexit would unwind past the library's frames without releasing
		// what they hold (the lock New and SetLogCallback wait on), and every later call would
		// hang, so end the program here the way an unrecovered panic does. recover() is nil
		// during a Goexit; only returned tells it apart from a normal return.
		if r := recover(); r != nil {
			fmt.Fprintf(os.Stderr, "panic in the gemmacyber log callback: %v\n\n%s", r, debug.Stack())
			os.Exit(2)
		}
		if !returned {
			fmt.Fprintf(os.Stderr, "gemmacyber: the log callback called runtime.Goexit (t.Fatal, t.FailNow...), "+
				"which cannot unwind through the library\n\n%s", debug.Stack())
			os.Exit(2)
		}
	}()
	(*callback)(LogLevel(level), C.GoString(message))
	returned = true
}
