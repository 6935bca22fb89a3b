package gemmacyber_test

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"

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
