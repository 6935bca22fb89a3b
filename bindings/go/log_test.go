package gemmacyber_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gemmacyber "github.com/gemma-cyber/gemma-cyber/bindings/go"
)

// logRecorder keeps the messages a log callback receives, from whichever threads call it.
type logRecorder struct {
	mu       sync.Mutex
	messages []string
}

func (r *logRecorder) record(level gemmacyber.LogLevel, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.messages = append(r.messages, level.String()+": "+message)
}

func (r *logRecorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.messages...)
}

// setLogCallback sets callback for this test only: the callback is process-wide.
func setLogCallback(t *testing.T, callback func(gemmacyber.LogLevel, string)) {
	t.Helper()
	gemmacyber.SetLogCallback(callback)
	t.Cleanup(func() { gemmacyber.SetLogCallback(nil) })
}

func TestLogLevelNames(t *testing.T) {
	for level, want := range map[gemmacyber.LogLevel]string{
		gemmacyber.LogLevelWarning: "warning",
		gemmacyber.LogLevelInfo:    "info",
		7:                          "LogLevel(7)",
	} {
		if got := level.String(); got != want {
			t.Errorf("LogLevel(%d).String() = %q, want %q", uint32(level), got, want)
		}
	}
}

func TestLogCallbackHearsTheBackendStartAndNilSilencesIt(t *testing.T) {
	var recorder logRecorder
	setLogCallback(t, recorder.record)
	newClassifier(t, gemmacyber.Options{Backend: gemmacyber.BackendCPU})
	started := false
	for _, message := range recorder.all() {
		// Other messages (e.g. about plugin files) may come too; only this one is certain.
		started = started || strings.HasPrefix(message, "info: cpu backend started on ")
	}
	if !started {
		t.Fatalf("no \"cpu backend started on\" info message among %q", recorder.all())
	}

	gemmacyber.SetLogCallback(nil)
	before := len(recorder.all())
	newClassifier(t, gemmacyber.Options{Backend: gemmacyber.BackendCPU})
	if after := recorder.all(); len(after) != before {
		t.Fatalf("messages after SetLogCallback(nil): %q", after[before:])
	}
}

// Once SetLogCallback returns, the callback it replaced is never called again, even while other
// goroutines are creating classifiers (which log) at that moment.
func TestReplacedLogCallbackIsNeverCalledAgain(t *testing.T) {
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 4)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := gemmacyber.New(gemmacyber.Options{Backend: gemmacyber.BackendCPU})
				if err != nil {
					errs <- err
					return
				}
				c.Close()
			}
		}()
	}
	// Stops them also when the test fails early, before they disturb later tests' handle counts.
	stopCreating := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopCreating)
	t.Cleanup(func() { gemmacyber.SetLogCallback(nil) })
	var calls, lateCalls atomic.Int64
	previous := new(atomic.Bool) // set once the callback registered last is replaced
	for i := 0; i < 50; i++ {
		replaced := new(atomic.Bool)
		callback := func(gemmacyber.LogLevel, string) {
			calls.Add(1)
			if replaced.Load() {
				lateCalls.Add(1)
			}
		}
		if i%5 == 4 {
			callback = nil // also replace through nil, which unregisters at the C level
		}
		gemmacyber.SetLogCallback(callback)
		previous.Store(true)
		previous = replaced
		// Lets the creating goroutines log through this callback meanwhile.
		newClassifier(t, gemmacyber.Options{Backend: gemmacyber.BackendCPU}).Close()
	}
	stopCreating()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if calls.Load() == 0 {
		t.Fatal("no callback was called")
	}
	if n := lateCalls.Load(); n != 0 {
		t.Fatalf("%d calls of a callback after SetLogCallback replaced it", n)
	}
}

// SetLogCallback from inside the callback is refused and changes nothing, also while another
// goroutine's SetLogCallback waits for that very callback to return: before the refusal, the inner
// call waited for the lock the outer one held while it waited for the callback, and both hung.
func TestSetLogCallbackFromInsideTheCallbackIsRefused(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	inner := make(chan error, 1)
	var first sync.Once
	var calls atomic.Int64
	setLogCallback(t, func(gemmacyber.LogLevel, string) {
		calls.Add(1)
		first.Do(func() {
			close(entered)
			<-release
			inner <- gemmacyber.SetLogCallback(nil)
		})
	})
	created := make(chan error, 1)
	go func() {
		c, err := gemmacyber.New(gemmacyber.Options{Backend: gemmacyber.BackendCPU})
		if err == nil {
			c.Close()
		}
		created <- err
	}()
	<-entered
	replacedBy := new(atomic.Int64)
	outer := make(chan error, 1)
	go func() {
		outer <- gemmacyber.SetLogCallback(func(gemmacyber.LogLevel, string) { replacedBy.Add(1) })
	}()
	// Gives the outer SetLogCallback time to reach the library, which then waits for the callback.
	time.Sleep(100 * time.Millisecond)
	close(release)
	deadline := time.After(60 * time.Second)
	for _, ch := range []chan error{inner, created, outer} {
		select {
		case err := <-ch:
			if ch == inner {
				var e *gemmacyber.Error
				if !errors.As(err, &e) || e.Status != gemmacyber.StatusInvalidArgument ||
					!strings.Contains(e.Message, "from inside the log callback") {
					t.Fatalf("SetLogCallback inside the callback: %v, want StatusInvalidArgument", err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			t.Fatal("SetLogCallback from inside the callback hung")
		}
	}
	// The outer call took effect, the refused inner one did not (it would have turned logging off).
	newClassifier(t, gemmacyber.Options{Backend: gemmacyber.BackendCPU}).Close()
	if replacedBy.Load() == 0 {
		t.Fatal("the callback set by the outer SetLogCallback heard nothing")
	}
	if calls.Load() != 1 {
		t.Fatalf("the first callback was called %d times, want once", calls.Load())
	}
}

// createInChildWithLogCallback is the child's side of the tests below: it creates a cpu classifier
// (which logs) through callback, which must end the program. Should the program go on instead, it
// turns the callback off and creates again: that create hangs if the callback left the library's
// lock held, or else returns and the child exits 0; either way the parent sees no exit status 2.
func createInChildWithLogCallback(t *testing.T, callback func(gemmacyber.LogLevel, string)) {
	gemmacyber.SetLogCallback(callback)
	done := make(chan struct{})
	go func() {
		// Its own goroutine, so that a Goexit that gets through ends this one, not the test's.
		defer close(done)
		if c, err := gemmacyber.New(gemmacyber.Options{Backend: gemmacyber.BackendCPU}); err == nil {
			c.Close()
		}
	}()
	<-done
	fmt.Fprintln(os.Stderr, "child: the program went on after the log callback; creating again")
	gemmacyber.SetLogCallback(nil)
	newClassifier(t, gemmacyber.Options{Backend: gemmacyber.BackendCPU})
	fmt.Fprintln(os.Stderr, "child: created again")
}

// runChild runs test alone in a child process of this test binary with envVar=1 and wants it to
// exit with status 2 within 60 s; it returns the child's stderr.
func runChild(t *testing.T, test, envVar string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), envVar+"=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("the child was still running after 60 s (hung on the library's lock?); stdout:\n%s\nstderr:\n%s",
			stdout.String(), stderr.String())
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("the child ended with %v, want exit status 2; stdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	return stderr.String()
}

// A callback that calls runtime.Goexit (as t.Fatal does) cannot unwind through the library, which
// would be left holding its lock and hang every later create: the bindings end the program instead,
// saying why.
func TestLogCallbackThatCallsGoexitEndsTheProgram(t *testing.T) {
	if os.Getenv("GEMMA_CYBER_GOEXIT_CHILD") == "1" {
		createInChildWithLogCallback(t, func(gemmacyber.LogLevel, string) { runtime.Goexit() })
		return
	}
	stderr := runChild(t, "TestLogCallbackThatCallsGoexitEndsTheProgram", "GEMMA_CYBER_GOEXIT_CHILD")
	if !strings.Contains(stderr, "the log callback called runtime.Goexit") {
		t.Fatalf("the child's stderr does not explain the Goexit:\n%s", stderr)
	}
}

// The same for a callback that panics.
func TestLogCallbackThatPanicsEndsTheProgram(t *testing.T) {
	if os.Getenv("GEMMA_CYBER_PANIC_CHILD") == "1" {
		createInChildWithLogCallback(t, func(gemmacyber.LogLevel, string) { panic("thrown by the test's callback") })
		return
	}
	stderr := runChild(t, "TestLogCallbackThatPanicsEndsTheProgram", "GEMMA_CYBER_PANIC_CHILD")
	if !strings.Contains(stderr, "panic in the gemmacyber log callback: thrown by the test's callback") {
		t.Fatalf("the child's stderr does not explain the panic:\n%s", stderr)
	}
}
