package gemmacyber_test

import (
	"errors"
	"fmt"
	"log"
	"os"
	"strings"

	gemmacyber "github.com/gemma-cyber/gemma-cyber/bindings/go"
)

// Classify a batch with the built-in model.
func Example() {
	classifier, err := gemmacyber.New(gemmacyber.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer classifier.Close()

	dim := classifier.InputDim()
	embeddings := make([]float32, 2*dim) // two rows, row-major
	embeddings[0] = 1                    // row 0: a spike
	for i := dim; i < 2*dim; i++ {
		embeddings[i] = 0.036 // row 1: constant, about unit length
	}
	probabilities, err := classifier.Classify(embeddings, dim)
	if err != nil {
		fmt.Println(err)
		return
	}
	for row, p := range probabilities {
		fmt.Printf("row %d: %.4f\n", row, p)
	}
	// Output:
	// row 0: 0.0009
	// row 1: 0.0001
}

// Failures carry their status: test for one with errors.Is, read the message with errors.As.
func ExampleError() {
	classifier, err := gemmacyber.New(gemmacyber.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer classifier.Close()

	_, err = classifier.Classify(make([]float32, 512), 512)
	fmt.Println(errors.Is(err, gemmacyber.StatusDimensionMismatch))
	var e *gemmacyber.Error
	if errors.As(err, &e) {
		fmt.Println(e.Status)
	}
	// Output:
	// true
	// DIMENSION_MISMATCH
}

// Reuse output slices across calls and get labels too.
func ExampleClassifier_ClassifyInto() {
	threshold := float32(0.5)
	classifier, err := gemmacyber.New(gemmacyber.Options{Threshold: &threshold})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer classifier.Close()

	dim := classifier.InputDim()
	embeddings := make([]float32, dim)
	embeddings[0] = 1
	probabilities := make([]float32, 1)
	labels := make([]bool, 1)
	if err := classifier.ClassifyInto(embeddings, dim, probabilities, labels); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%.4f cyber=%v\n", probabilities[0], labels[0])
	// Output: 0.0009 cyber=false
}

// Send the library's messages to a log.Logger; here to stdout, trimmed to what every machine prints.
func ExampleSetLogCallback() {
	logger := log.New(os.Stdout, "gemma_cyber ", 0) // a Logger may be used from many goroutines
	gemmacyber.SetLogCallback(func(level gemmacyber.LogLevel, message string) {
		// The device name after " on " differs between machines.
		message, _, _ = strings.Cut(message, " on ")
		logger.Printf("%v: %s", level, message)
	})
	defer gemmacyber.SetLogCallback(nil)

	classifier, err := gemmacyber.New(gemmacyber.Options{Backend: gemmacyber.BackendCPU})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer classifier.Close()
	// Output: gemma_cyber info: cpu backend started
}
