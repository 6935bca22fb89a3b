package gemmacyber

// The C side of the log callback. It lives apart from log.go because a file with an //export may
// only declare C functions in its preamble, and these are defined.

/*
#include "gemma_cyber.h"

void gemmaCyberLogTrampoline(void *user_data, enum gemma_cyber_log_level level, char *message);

// Whether this OS thread is running the Go log callback. A Go callback runs on the C thread that
// called it, and so does every C call it makes, so a SetLogCallback made from inside it finds this
// set: a Go-side flag could not tell that goroutine from any other.
static _Thread_local int gemma_cyber_go_inside_log_callback;

static void gemmaCyberLogOnThisThread(void *user_data, enum gemma_cyber_log_level level, const char *message) {
	gemma_cyber_go_inside_log_callback = 1;
	// The trampoline never unwinds: a panic or runtime.Goexit in the callback ends the program.
	gemmaCyberLogTrampoline(user_data, level, (char *)message);
	gemma_cyber_go_inside_log_callback = 0;
}

static int gemmaCyberInsideLogCallback(void) {
	return gemma_cyber_go_inside_log_callback;
}

static gemma_cyber_log_callback gemmaCyberNativeLogCallback(void) {
	return gemmaCyberLogOnThisThread;
}
*/
import "C"

// insideLogCallback reports whether the calling goroutine is running inside the log callback.
func insideLogCallback() bool {
	return C.gemmaCyberInsideLogCallback() != 0
}

// nativeLogCallback is what SetLogCallback registers with the library: it marks the thread, then
// hands the message to gemmaCyberLogTrampoline.
func nativeLogCallback() C.gemma_cyber_log_callback {
	return C.gemmaCyberNativeLogCallback()
}
