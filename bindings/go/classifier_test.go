package gemmacyber_test

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	gemmacyber "github.com/gemma-cyber/gemma-cyber/bindings/go"
)

const goldenDir = "../../tests/golden"

// readNpy reads a little-endian float32 or float64 .npy file (numpy's format 1.0) as float64s.
func readNpy(t *testing.T, path string) []float64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < 10 || string(data[1:6]) != "NUMPY" || data[6] != 1 {
		t.Fatalf("%s: not a version 1 .npy file", path)
	}
	headerLen := int(binary.LittleEndian.Uint16(data[8:10]))
	header, body := string(data[10:10+headerLen]), data[10+headerLen:]
	var values []float64
	switch {
	case strings.Contains(header, "'<f4'"):
		for i := 0; i+4 <= len(body); i += 4 {
			values = append(values, float64(math.Float32frombits(binary.LittleEndian.Uint32(body[i:]))))
		}
	case strings.Contains(header, "'<f8'"):
		for i := 0; i+8 <= len(body); i += 8 {
			values = append(values, math.Float64frombits(binary.LittleEndian.Uint64(body[i:])))
		}
	default:
		t.Fatalf("%s: unexpected dtype in %q", path, header)
	}
	return values
}

// golden returns the golden inputs (64 x 768, row-major) and the reference probabilities.
func golden(t *testing.T) ([]float32, []float64) {
	t.Helper()
	inputs64 := readNpy(t, filepath.Join(goldenDir, "default.inputs.npy"))
	inputs := make([]float32, len(inputs64))
	for i, v := range inputs64 {
		inputs[i] = float32(v)
	}
	return inputs, readNpy(t, filepath.Join(goldenDir, "default.expected.npy"))
}

func newClassifier(t *testing.T, opts gemmacyber.Options) *gemmacyber.Classifier {
	t.Helper()
	c, err := gemmacyber.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// wantStatus checks that err is an *Error with status want and the library's message format.
func wantStatus(t *testing.T, what string, err error, want gemmacyber.Status) {
	t.Helper()
	var e *gemmacyber.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: got %v, want an *Error with %v", what, err, want)
	}
	if !errors.Is(err, want) || e.Status != want {
		t.Fatalf("%s: got status %v (%q), want %v", what, e.Status, e.Message, want)
	}
	if !strings.HasPrefix(e.Message, "GEMMA_CYBER_STATUS_"+want.String()+": ") {
		t.Fatalf("%s: message %q does not name %v", what, e.Message, want)
	}
}

func TestVersionMatchesABI(t *testing.T) {
	if gemmacyber.Version() == "" {
		t.Fatal("empty version")
	}
	if got := gemmacyber.LibraryABIVersion(); got != gemmacyber.ABIVersion {
		t.Fatalf("library ABI %d, bindings ABI %d", got, gemmacyber.ABIVersion)
	}
}

func TestClassifyMatchesGoldenVectors(t *testing.T) {
	c := newClassifier(t, gemmacyber.Options{})
	if c.InputDim() != 768 || c.DeviceName() == "" || c.Backend() == gemmacyber.BackendAuto {
		t.Fatalf("accessors: dim %d, device %q, backend %v", c.InputDim(), c.DeviceName(), c.Backend())
	}
	inputs, expected := golden(t)
	got, err := c.Classify(inputs, c.InputDim())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(expected) {
		t.Fatalf("%d probabilities for %d rows", len(got), len(expected))
	}
	for i := range got {
		if math.Abs(float64(got[i])-expected[i]) > 1e-5 {
			t.Fatalf("row %d: %v, golden %v", i, got[i], expected[i])
		}
	}
}

func TestClassifyIntoWritesLabelsAtTheThreshold(t *testing.T) {
	threshold := float32(0.5)
	c := newClassifier(t, gemmacyber.Options{Backend: gemmacyber.BackendCPU, Threshold: &threshold})
	if c.Backend() != gemmacyber.BackendCPU {
		t.Fatalf("backend %v, asked for cpu", c.Backend())
	}
	inputs, _ := golden(t)
	rows := len(inputs) / 768
	probabilities := make([]float32, rows)
	labels := make([]bool, rows)
	if err := c.ClassifyInto(inputs, 768, probabilities, labels); err != nil {
		t.Fatal(err)
	}
	sawBoth := map[bool]bool{}
	for i := range labels {
		if labels[i] != (probabilities[i] >= threshold) {
			t.Fatalf("row %d: label %v for probability %v", i, labels[i], probabilities[i])
		}
		sawBoth[labels[i]] = true
	}
	if len(sawBoth) != 2 {
		t.Fatal("the golden rows should give both labels")
	}
	p2, l2, err := c.ClassifyWithLabels(inputs, 768)
	if err != nil {
		t.Fatal(err)
	}
	for i := range l2 {
		if l2[i] != (p2[i] >= threshold) {
			t.Fatalf("ClassifyWithLabels row %d: label %v for probability %v", i, l2[i], p2[i])
		}
	}
	if _, _, err := c.ClassifyWithLabels(inputs, 767); !errors.Is(err, gemmacyber.StatusInvalidArgument) {
		t.Fatalf("ClassifyWithLabels(dim 767): %v", err)
	}
	// Labels are optional.
	if err := c.ClassifyInto(inputs, 768, probabilities, nil); err != nil {
		t.Fatal(err)
	}
}

func TestModelDataLoadsLikeModelPath(t *testing.T) {
	data, err := os.ReadFile("../../models/default.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	fromData := newClassifier(t, gemmacyber.Options{ModelData: data})
	fromPath := newClassifier(t, gemmacyber.Options{ModelPath: "../../models/default.safetensors"})
	inputs, _ := golden(t)
	a, errA := fromData.Classify(inputs[:768*4], 768)
	b, errB := fromPath.Classify(inputs[:768*4], 768)
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	for i := range a {
		if math.Abs(float64(a[i]-b[i])) > 1e-6 {
			t.Fatalf("row %d: %v from data, %v from path", i, a[i], b[i])
		}
	}
}

func TestModelSHA256PinsTheModel(t *testing.T) {
	data, err := os.ReadFile("../../models/default.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	newClassifier(t, gemmacyber.Options{ModelData: data, ModelSHA256: sum[:]})
	sum[0] ^= 1
	_, err = gemmacyber.New(gemmacyber.Options{ModelData: data, ModelSHA256: sum[:]})
	if !errors.Is(err, gemmacyber.StatusModelInvalid) || !strings.Contains(err.Error(), "SHA-256") {
		t.Fatalf("wrong SHA-256: got %v, want StatusModelInvalid", err)
	}
	_, err = gemmacyber.New(gemmacyber.Options{ModelSHA256: sum[:5]})
	want := "GEMMA_CYBER_STATUS_INVALID_ARGUMENT: ModelSHA256 has 5 bytes; a SHA-256 has 32"
	if !errors.Is(err, gemmacyber.StatusInvalidArgument) || err.Error() != want {
		t.Fatalf("short SHA-256: got %v, want %q", err, want)
	}
}

func TestEmptyInputIsAnEmptyResult(t *testing.T) {
	c := newClassifier(t, gemmacyber.Options{})
	got, err := c.Classify(nil, 768)
	if err != nil || len(got) != 0 {
		t.Fatalf("Classify(nil): %v, %v", got, err)
	}
	if err := c.ClassifyInto([]float32{}, 768, nil, nil); err != nil {
		t.Fatalf("ClassifyInto(empty): %v", err)
	}
}

func TestBadClassifyCallsReturnTheirStatusAndWriteNothing(t *testing.T) {
	c := newClassifier(t, gemmacyber.Options{})
	row := make([]float32, 768)
	row[0] = 1
	withValue := func(v float32) []float32 {
		r := append([]float32(nil), row...)
		r[3] = v
		return r
	}
	cases := []struct {
		name       string
		embeddings []float32
		dim        int
		want       gemmacyber.Status
	}{
		{"wrong dim", append(row, row...), 512, gemmacyber.StatusDimensionMismatch},
		{"NaN", withValue(float32(math.NaN())), 768, gemmacyber.StatusNonFiniteInput},
		{"+Inf", withValue(float32(math.Inf(1))), 768, gemmacyber.StatusNonFiniteInput},
		{"-Inf", withValue(float32(math.Inf(-1))), 768, gemmacyber.StatusNonFiniteInput},
		{"dim 0", row, 0, gemmacyber.StatusInvalidArgument},
		{"negative dim", row, -768, gemmacyber.StatusInvalidArgument},
		{"partial row", row[:700], 768, gemmacyber.StatusInvalidArgument},
	}
	for _, tc := range cases {
		probabilities := []float32{-1, -1, -1}
		labels := []bool{true, true, true}
		err := c.ClassifyInto(tc.embeddings, tc.dim, probabilities, labels)
		wantStatus(t, tc.name, err, tc.want)
		if probabilities[0] != -1 || !labels[0] {
			t.Fatalf("%s: a failed call wrote its outputs", tc.name)
		}
		_, err = c.Classify(tc.embeddings, tc.dim)
		wantStatus(t, tc.name+" (Classify)", err, tc.want)
	}
	err := c.ClassifyInto(row, 768, nil, nil)
	wantStatus(t, "no room for probabilities", err, gemmacyber.StatusInvalidArgument)
	err = c.ClassifyInto(row, 768, make([]float32, 1), []bool{})
	wantStatus(t, "no room for labels", err, gemmacyber.StatusInvalidArgument)
	// Probabilities written over the input the call reads: refused, and the input is unchanged.
	shared := append([]float32(nil), row...)
	err = c.ClassifyInto(shared, 768, shared[767:], nil)
	wantStatus(t, "probabilities over the input", err, gemmacyber.StatusInvalidArgument)
	if shared[767] != row[767] {
		t.Fatal("probabilities over the input: the input was written")
	}
}

func TestBadOptionsReturnTheirStatus(t *testing.T) {
	junk := filepath.Join(t.TempDir(), "junk.safetensors")
	if err := os.WriteFile(junk, []byte("this is not a safetensors file"), 0o600); err != nil {
		t.Fatal(err)
	}
	tooHigh := float32(1.5)
	// NaN is the C API's "the model's own": passed on, it was silently the default.
	nan := float32(math.NaN())
	cases := []struct {
		name string
		opts gemmacyber.Options
		want gemmacyber.Status
	}{
		{"missing model file", gemmacyber.Options{ModelPath: "/nonexistent/model.safetensors"}, gemmacyber.StatusModelNotFound},
		{"junk model file", gemmacyber.Options{ModelPath: junk}, gemmacyber.StatusModelInvalid},
		{"junk model data", gemmacyber.Options{ModelData: []byte("junk")}, gemmacyber.StatusModelInvalid},
		// Given but empty is an empty model, like an empty file; only nil means the built-in one.
		{"empty model data", gemmacyber.Options{Backend: gemmacyber.BackendCPU, ModelData: []byte{}}, gemmacyber.StatusModelInvalid},
		{"path and data", gemmacyber.Options{ModelPath: junk, ModelData: []byte("junk")}, gemmacyber.StatusInvalidArgument},
		{"unknown backend", gemmacyber.Options{Backend: gemmacyber.Backend(99)}, gemmacyber.StatusInvalidArgument},
		{"threshold above 1", gemmacyber.Options{Threshold: &tooHigh}, gemmacyber.StatusInvalidArgument},
		{"NaN threshold", gemmacyber.Options{Backend: gemmacyber.BackendCPU, Threshold: &nan}, gemmacyber.StatusInvalidArgument},
	}
	for _, tc := range cases {
		c, err := gemmacyber.New(tc.opts)
		if c != nil {
			t.Fatalf("%s: got a classifier", tc.name)
		}
		wantStatus(t, tc.name, err, tc.want)
	}
	// The range message names this binding's "model's own", nil, not the C API's NaN.
	_, err := gemmacyber.New(gemmacyber.Options{Threshold: &tooHigh})
	if want := "or nil for the model's own"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("threshold above 1: %v does not say %q", err, want)
	}
}

// C reads a string only up to a NUL, so each string option with one inside is refused, naming
// the field; the part before the NUL is valid in every case, so a silent cut would succeed.
func TestStringOptionsWithANULAreRefused(t *testing.T) {
	model := "../../models/default.safetensors"
	cases := []struct {
		field string
		opts  gemmacyber.Options
	}{
		{"ModelPath", gemmacyber.Options{Backend: gemmacyber.BackendCPU, ModelPath: model + "\x00junk"}},
		{"ONNXRuntimeLibrary", gemmacyber.Options{Backend: gemmacyber.BackendCPU, ONNXRuntimeLibrary: "libonnxruntime.so\x00junk"}},
		{"PluginDir", gemmacyber.Options{Backend: gemmacyber.BackendCPU, PluginDir: ".\x00junk"}},
		{"PluginName", gemmacyber.Options{Backend: gemmacyber.BackendCPU, PluginName: "example_c\x00junk"}},
		{"PluginSettings[1]", gemmacyber.Options{Backend: gemmacyber.BackendCPU, PluginSettings: []string{"wgpu.adapter=x", "wgpu.adapter=y\x00junk"}}},
	}
	for _, tc := range cases {
		c, err := gemmacyber.New(tc.opts)
		if c != nil {
			c.Close()
			t.Fatalf("%s with a NUL: got a classifier", tc.field)
		}
		wantStatus(t, tc.field, err, gemmacyber.StatusInvalidArgument)
		if want := tc.field + " contains a NUL byte"; !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: message %q does not say %q", tc.field, err.Error(), want)
		}
	}
}

func TestClosedClassifierRefusesCalls(t *testing.T) {
	c, err := gemmacyber.New(gemmacyber.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	_, err = c.Classify(make([]float32, 768), 768)
	wantStatus(t, "Classify after Close", err, gemmacyber.StatusInvalidArgument)
	if c.InputDim() != 0 || c.DeviceName() != "" || c.Backend() != gemmacyber.BackendAuto {
		t.Fatal("accessors after Close should give the C API's NULL answers")
	}
}

// A nil *Classifier answers as the C API does given NULL: no panic.
func TestNilClassifierAnswersAsTheCAPIsNULL(t *testing.T) {
	var c *gemmacyber.Classifier
	if err := c.Close(); err != nil {
		t.Fatal("Close of nil:", err)
	}
	_, err := c.Classify(make([]float32, 768), 768)
	wantStatus(t, "Classify on nil", err, gemmacyber.StatusInvalidArgument)
	if !strings.Contains(err.Error(), "the classifier is nil") {
		t.Fatalf("message %q does not say the classifier is nil", err.Error())
	}
	_, _, err = c.ClassifyWithLabels(make([]float32, 768), 768)
	wantStatus(t, "ClassifyWithLabels on nil", err, gemmacyber.StatusInvalidArgument)
	err = c.ClassifyInto(make([]float32, 768), 768, make([]float32, 1), nil)
	wantStatus(t, "ClassifyInto on nil", err, gemmacyber.StatusInvalidArgument)
	if c.InputDim() != 0 || c.DeviceName() != "" || c.Backend() != gemmacyber.BackendAuto {
		t.Fatal("accessors of nil should give the C API's NULL answers")
	}
}

// Eight goroutines share one classifier; half their calls fail, so each also checks that the
// message it reads is its own call's (the last error is per OS thread).
func TestConcurrentClassifyFromEightGoroutines(t *testing.T) {
	c := newClassifier(t, gemmacyber.Options{})
	inputs, _ := golden(t)
	want, err := c.Classify(inputs, 768)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				if (g+i)%2 == 0 {
					_, err := c.Classify(inputs[:768*3], 700)
					var e *gemmacyber.Error
					if !errors.As(err, &e) || e.Status != gemmacyber.StatusInvalidArgument ||
						!strings.Contains(e.Message, "INVALID_ARGUMENT") {
						errs <- err
						return
					}
					_, err = c.Classify(inputs[:768*2], 512)
					if !errors.Is(err, gemmacyber.StatusDimensionMismatch) || !strings.Contains(err.Error(), "DIMENSION_MISMATCH") {
						errs <- err
						return
					}
					continue
				}
				got, err := c.Classify(inputs, 768)
				if err != nil {
					errs <- err
					return
				}
				for r := range got {
					// Not bit-exact: a backend may split work differently; cross-talk would be far off.
					if math.Abs(float64(got[r]-want[r])) > 1e-6 {
						errs <- errors.New("a concurrent result differs from the serial one")
						return
					}
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// Close waits for calls in flight; calls after it fail cleanly instead of using freed memory.
func TestCloseDuringConcurrentClassify(t *testing.T) {
	c, err := gemmacyber.New(gemmacyber.Options{})
	if err != nil {
		t.Fatal(err)
	}
	inputs, _ := golden(t)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				if _, err := c.Classify(inputs[:768*8], 768); err != nil && !errors.Is(err, gemmacyber.StatusInvalidArgument) {
					t.Error(err)
					return
				}
			}
		}()
	}
	time.Sleep(5 * time.Millisecond)
	c.Close()
	wg.Wait()
}

// Classifiers dropped without Close are freed by the finalizer; closed ones are freed by Close.
func TestCloseAndFinalizerFreeEveryHandle(t *testing.T) {
	runtime.GC()
	before := gemmacyber.LiveHandles()
	func() {
		for i := 0; i < 4; i++ {
			if _, err := gemmacyber.New(gemmacyber.Options{}); err != nil {
				t.Fatal(err)
			}
		}
	}()
	c, err := gemmacyber.New(gemmacyber.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for gemmacyber.LiveHandles() > before && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if live := gemmacyber.LiveHandles(); live != before {
		t.Fatalf("%d classifiers still live, %d before", live, before)
	}
}

// buildExamplePlugin builds the plain-C example plugin with its documented script into a new
// directory and returns it.
func buildExamplePlugin(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("bash", "../../examples/plugin-c/build.sh", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("examples/plugin-c/build.sh: %v\n%s", err, out)
	}
	return dir
}

func TestAPluginChosenByNameMatchesTheGoldenVectors(t *testing.T) {
	dir := buildExamplePlugin(t)
	c := newClassifier(t, gemmacyber.Options{
		Backend:    gemmacyber.BackendPlugin,
		PluginName: "example_c",
		PluginDir:  dir,
	})
	if c.Backend() != gemmacyber.BackendPlugin {
		t.Fatalf("backend %v", c.Backend())
	}
	if !strings.HasPrefix(c.DeviceName(), "example_c ") {
		t.Fatalf("device name %q", c.DeviceName())
	}
	inputs, expected := golden(t)
	got, err := c.Classify(inputs, c.InputDim())
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range got {
		if math.Abs(float64(p)-expected[i]) > 1e-5 {
			t.Fatalf("row %d: %v, want %v", i, p, expected[i])
		}
	}
}

func TestPluginOptionsAreChecked(t *testing.T) {
	dir := buildExamplePlugin(t)
	cases := []struct {
		name string
		opts gemmacyber.Options
		want gemmacyber.Status
	}{
		{"plugin without a name", gemmacyber.Options{Backend: gemmacyber.BackendPlugin}, gemmacyber.StatusInvalidArgument},
		{"a setting the library owns", gemmacyber.Options{PluginSettings: []string{"num_threads=2"}}, gemmacyber.StatusInvalidArgument},
		{"a plugin that is not there", gemmacyber.Options{Backend: gemmacyber.BackendPlugin, PluginName: "not_there", PluginDir: dir}, gemmacyber.StatusBackendUnavailable},
		{"a setting the plugin does not know", gemmacyber.Options{
			Backend: gemmacyber.BackendPlugin, PluginName: "example_c", PluginDir: dir,
			PluginSettings: []string{"example_c.colour=blue"},
		}, gemmacyber.StatusBackendUnavailable},
	}
	for _, tc := range cases {
		c, err := gemmacyber.New(tc.opts)
		if c != nil {
			t.Fatalf("%s: got a classifier", tc.name)
		}
		wantStatus(t, tc.name, err, tc.want)
	}
}
