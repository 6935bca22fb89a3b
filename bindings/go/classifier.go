// Package gemmacyber classifies 768-d text embeddings as cyber-related or not with the gemma_cyber
// MLP, through the library's C API (include/gemma_cyber.h).
//
// A Classifier is safe for use by many goroutines at once. Failures are *Error values carrying
// the library's Status and message.
package gemmacyber

/*
#include <stdlib.h>
#include "gemma_cyber.h"
*/
import "C"

import (
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// ABIVersion is the C ABI version these bindings are written against.
const ABIVersion = 1

// Backend says which backend runs the model; the values are the C API's gemma_cyber_backend.
type Backend uint32

// The backends of the C API, in its order.
const (
	BackendAuto        Backend = 0 // a real GPU through wgpu, else ONNX Runtime, else cpu
	BackendCPU         Backend = 1 // plain Rust on the CPU; the reference
	BackendONNXRuntime Backend = 2 // ONNX Runtime, loaded at run time
	BackendWGPU        Backend = 3 // WGSL compute shaders through wgpu
	BackendPlugin      Backend = 4 // the plugin named by Options.PluginName
)

// String returns the backend's name as the CLI spells it: auto, cpu, onnxruntime, wgpu.
func (b Backend) String() string {
	switch b {
	case BackendAuto:
		return "auto"
	case BackendCPU:
		return "cpu"
	case BackendONNXRuntime:
		return "onnxruntime"
	case BackendPlugin:
		return "plugin"
	case BackendWGPU:
		return "wgpu"
	}
	return fmt.Sprintf("Backend(%d)", uint32(b))
}

// Options choose the model and backend for New. The zero value is the built-in model on the
// backend the library picks, with the model's own threshold.
type Options struct {
	// Backend to run on; BackendAuto lets the library choose.
	Backend Backend
	// ModelPath is a safetensors model file; "" (and no ModelData): the built-in model.
	ModelPath string
	// ModelData is a whole safetensors model in memory; copied by New. nil: not given; an empty
	// non-nil slice is an empty model (StatusModelInvalid).
	ModelData []byte
	// Threshold: label = probability >= *Threshold, in [0, 1] (NaN is refused); nil: the model's own.
	Threshold *float32
	// NumThreads a backend may use per call; 0: the library decides.
	NumThreads uint32
	// ONNXRuntimeLibrary is the path of ONNX Runtime's shared library; "":
	// GEMMA_CYBER_ONNXRUNTIME_LIB, then the usual search.
	ONNXRuntimeLibrary string
	// ModelSHA256 is the SHA-256 the model file must have (32 bytes); nil: not checked. A
	// mismatch is StatusModelInvalid and nothing is loaded.
	ModelSHA256 []byte
	// PluginDir is searched first for backend plugins (libgemma_cyber_<name>.so); "": only
	// GEMMA_CYBER_PLUGIN_DIR and the library's own directory.
	PluginDir string
	// PluginName names the plugin to run with BackendPlugin, e.g. "example_c".
	PluginName string
	// PluginSettings are "key=value" settings for plugins; a key prefixed with a plugin's name
	// and a dot ("wgpu.adapter=NVIDIA") reaches only that plugin.
	PluginSettings []string
}

// Classifier is a loaded model bound to a backend. Call Close when done; a finalizer frees it if
// Close is forgotten. Its methods may be called from many goroutines at once.
type Classifier struct {
	// mu lets Classify and the accessors run together (RLock) and keeps Close (Lock) from freeing
	// the handle while any of them is inside C, which the C API forbids.
	mu     sync.RWMutex
	handle *C.gemma_cyber_classifier
}

// liveHandles counts C classifiers created and not yet destroyed, so tests can prove that Close
// and the finalizer free every one.
var liveHandles atomic.Int64

// Version returns the library's version, e.g. "0.1.0".
func Version() string { return C.GoString(C.gemma_cyber_version()) }

// LibraryABIVersion returns the C ABI version of the library actually loaded.
func LibraryABIVersion() uint32 { return uint32(C.gemma_cyber_abi_version()) }

// call runs f, which makes one C call and returns its status, with the goroutine locked to its OS
// thread, so that the thread-local last error read on failure is this call's.
func call(f func() uint32) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// cgo types a returned C enum as uint32; Status gives it its meaning.
	status := Status(f())
	if status == StatusOK {
		return nil
	}
	return &Error{Status: status, Message: C.GoString(C.gemma_cyber_last_error())}
}

// New loads the model opts names on the backend it asks for.
func New(opts Options) (*Classifier, error) {
	// C reads a string up to its first NUL, so "real.safetensors\x00junk" would silently load
	// real.safetensors: refuse such a string before anything is allocated.
	texts := []struct{ field, value string }{
		{"ModelPath", opts.ModelPath},
		{"ONNXRuntimeLibrary", opts.ONNXRuntimeLibrary},
		{"PluginDir", opts.PluginDir},
		{"PluginName", opts.PluginName},
	}
	for i, setting := range opts.PluginSettings {
		texts = append(texts, struct{ field, value string }{fmt.Sprintf("PluginSettings[%d]", i), setting})
	}
	for _, text := range texts {
		if strings.IndexByte(text.value, 0) >= 0 {
			return nil, newError(StatusInvalidArgument, text.field+" contains a NUL byte")
		}
	}
	var c C.gemma_cyber_options
	C.gemma_cyber_options_init(&c, C.size_t(unsafe.Sizeof(c)))
	// cgo types the enum field as uint32; the C side validates the value (unknown: INVALID_ARGUMENT).
	c.backend = uint32(opts.Backend)
	if opts.ModelPath != "" {
		c.model_path = C.CString(opts.ModelPath)
		defer C.free(unsafe.Pointer(c.model_path))
	}
	if opts.ONNXRuntimeLibrary != "" {
		c.onnxruntime_library = C.CString(opts.ONNXRuntimeLibrary)
		defer C.free(unsafe.Pointer(c.onnxruntime_library))
	}
	if opts.PluginDir != "" {
		c.plugin_dir = C.CString(opts.PluginDir)
		defer C.free(unsafe.Pointer(c.plugin_dir))
	}
	if opts.PluginName != "" {
		c.plugin_name = C.CString(opts.PluginName)
		defer C.free(unsafe.Pointer(c.plugin_name))
	}
	if len(opts.PluginSettings) > 0 {
		// A NULL-terminated array in C memory: cgo forbids Go memory holding C pointers.
		pointerSize := C.size_t(unsafe.Sizeof((*C.char)(nil)))
		array := (**C.char)(C.calloc(C.size_t(len(opts.PluginSettings)+1), pointerSize))
		items := unsafe.Slice(array, len(opts.PluginSettings)+1)
		for i, setting := range opts.PluginSettings {
			items[i] = C.CString(setting)
		}
		defer func() {
			for _, item := range items {
				C.free(unsafe.Pointer(item))
			}
			C.free(unsafe.Pointer(array))
		}()
		c.plugin_settings = array
	}
	var pinner runtime.Pinner
	defer pinner.Unpin()
	switch {
	case len(opts.ModelData) > 0:
		// The options struct holds a pointer into Go memory during the call; cgo requires it pinned.
		pinner.Pin(&opts.ModelData[0])
		c.model_data = (*C.uint8_t)(unsafe.Pointer(&opts.ModelData[0]))
		c.model_data_len = C.size_t(len(opts.ModelData))
	case opts.ModelData != nil:
		// Given but empty: a NULL model_data would mean "not given" and load the built-in model,
		// so pass a valid non-NULL pointer with length 0, which the library refuses as an empty
		// model (StatusModelInvalid), like an empty file.
		empty := C.malloc(1)
		defer C.free(empty)
		c.model_data = (*C.uint8_t)(empty)
	}
	c.threshold = C.float(math.NaN())
	if opts.Threshold != nil {
		// NaN is how the C API says "the model's own": given here it would pass silently.
		if math.IsNaN(float64(*opts.Threshold)) {
			return nil, newError(StatusInvalidArgument, "Threshold is NaN; pass nil for the model's own")
		}
		// Checked here too, so the message names this binding's "model's own" (nil), not the
		// C API's NaN.
		if t := *opts.Threshold; t < 0 || t > 1 {
			return nil, newError(StatusInvalidArgument, fmt.Sprintf(
				"Threshold is %v; expected a number in [0, 1], or nil for the model's own", t))
		}
		c.threshold = C.float(*opts.Threshold)
	}
	c.num_threads = C.uint32_t(opts.NumThreads)
	if opts.ModelSHA256 != nil {
		if len(opts.ModelSHA256) != 32 {
			return nil, newError(StatusInvalidArgument, fmt.Sprintf(
				"ModelSHA256 has %d bytes; a SHA-256 has 32", len(opts.ModelSHA256)))
		}
		pinner.Pin(&opts.ModelSHA256[0])
		c.model_sha256 = (*C.uint8_t)(unsafe.Pointer(&opts.ModelSHA256[0]))
	}

	var handle *C.gemma_cyber_classifier
	if err := call(func() uint32 { return C.gemma_cyber_create(&c, &handle) }); err != nil {
		return nil, err
	}
	liveHandles.Add(1)
	classifier := &Classifier{handle: handle}
	// A safety net only: Close frees the library's memory deterministically.
	runtime.SetFinalizer(classifier, (*Classifier).Close)
	return classifier, nil
}

// Close frees the classifier. It waits for calls in progress; later calls fail with
// StatusInvalidArgument. Closing twice is fine, and so is closing a nil *Classifier, as
// gemma_cyber_destroy(NULL) is.
func (c *Classifier) Close() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.handle != nil {
		C.gemma_cyber_destroy(c.handle)
		c.handle = nil
		liveHandles.Add(-1)
		runtime.SetFinalizer(c, nil)
	}
	return nil
}

// Classify classifies len(embeddings)/dim row-major embeddings of dim floats each and returns one
// probability per row. An empty slice gives an empty result.
func (c *Classifier) Classify(embeddings []float32, dim int) ([]float32, error) {
	rows, err := rowCount(embeddings, dim)
	if err != nil {
		return nil, err
	}
	probabilities := make([]float32, rows)
	if err := c.classify(embeddings, rows, dim, probabilities, nil); err != nil {
		return nil, err
	}
	return probabilities, nil
}

// ClassifyWithLabels is Classify also returning one label per row (true: cyber, i.e. probability
// >= the threshold).
func (c *Classifier) ClassifyWithLabels(embeddings []float32, dim int) ([]float32, []bool, error) {
	rows, err := rowCount(embeddings, dim)
	if err != nil {
		return nil, nil, err
	}
	probabilities := make([]float32, rows)
	labels := make([]bool, rows)
	if err := c.classify(embeddings, rows, dim, probabilities, labels); err != nil {
		return nil, nil, err
	}
	return probabilities, labels, nil
}

// ClassifyInto is Classify writing into the caller's slices instead of new ones: one probability
// per row into probabilities and, unless labels is nil, one label (true: cyber) per row into
// labels. Both must hold at least len(embeddings)/dim values. Nothing is written on failure.
func (c *Classifier) ClassifyInto(embeddings []float32, dim int, probabilities []float32, labels []bool) error {
	rows, err := rowCount(embeddings, dim)
	if err != nil {
		return err
	}
	if len(probabilities) < rows || (labels != nil && len(labels) < rows) {
		return newError(StatusInvalidArgument, fmt.Sprintf(
			"output slices hold %d probabilities and %d labels; %d rows need %d each",
			len(probabilities), len(labels), rows, rows))
	}
	return c.classify(embeddings, rows, dim, probabilities, labels)
}

// rowCount checks that embeddings is whole rows of dim floats and returns how many.
func rowCount(embeddings []float32, dim int) (int, error) {
	if dim <= 0 || len(embeddings)%dim != 0 {
		return 0, newError(StatusInvalidArgument, fmt.Sprintf(
			"len(embeddings) is %d, not a whole number of rows of dim %d", len(embeddings), dim))
	}
	return len(embeddings) / dim, nil
}

func (c *Classifier) classify(embeddings []float32, rows, dim int, probabilities []float32, labels []bool) error {
	handle, done := c.read()
	defer done()
	if handle == nil {
		if c == nil {
			return newError(StatusInvalidArgument, "the classifier is nil")
		}
		return newError(StatusInvalidArgument, "the classifier is closed")
	}
	var embeddingsPtr *C.float
	var probabilitiesPtr *C.float
	var labelsPtr *C.uint8_t
	if rows > 0 {
		embeddingsPtr = (*C.float)(unsafe.Pointer(&embeddings[0]))
		probabilitiesPtr = (*C.float)(unsafe.Pointer(&probabilities[0]))
		if labels != nil {
			// Go's bool is one byte holding 0 or 1, and the library writes exactly 0 or 1.
			labelsPtr = (*C.uint8_t)(unsafe.Pointer(&labels[0]))
		}
	}
	err := call(func() uint32 {
		return C.gemma_cyber_classify(handle, embeddingsPtr, C.size_t(rows), C.size_t(dim), probabilitiesPtr, labelsPtr)
	})
	// The slices are only reached through unsafe pointers above; keep them alive through the call.
	runtime.KeepAlive(embeddings)
	runtime.KeepAlive(probabilities)
	runtime.KeepAlive(labels)
	return err
}

// read holds off Close until done is called and returns the handle: nil for a closed classifier
// or a nil *Classifier, which the C API's accessors answer with AUTO, "" and 0.
func (c *Classifier) read() (handle *C.gemma_cyber_classifier, done func()) {
	if c == nil {
		return nil, func() {}
	}
	c.mu.RLock()
	return c.handle, c.mu.RUnlock
}

// Backend returns the backend the classifier runs on (never BackendAuto while open).
func (c *Classifier) Backend() Backend {
	handle, done := c.read()
	defer done()
	return Backend(uint32(C.gemma_cyber_active_backend(handle)))
}

// DeviceName returns the device the classifier runs on, for people; "" once closed or nil.
func (c *Classifier) DeviceName() string {
	handle, done := c.read()
	defer done()
	return C.GoString(C.gemma_cyber_device_name(handle))
}

// InputDim returns the model's input dimension: the dim Classify expects; 0 once closed or nil.
func (c *Classifier) InputDim() int {
	handle, done := c.read()
	defer done()
	return int(C.gemma_cyber_input_dim(handle))
}
