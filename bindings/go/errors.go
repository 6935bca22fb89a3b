package gemmacyber

// Status is the result code of a failed call; the values are the C API's gemma_cyber_status.
// A Status is itself an error, so errors.Is(err, gemmacyber.StatusDimensionMismatch) tells what
// failed.
type Status uint32

// The statuses of the C API, in its order.
const (
	StatusOK                 Status = 0 // success; never inside an *Error
	StatusInvalidArgument    Status = 1 // a nil or empty value where one is needed, a size that overflows, bad options
	StatusDimensionMismatch  Status = 2 // dim is not the model's input dim
	StatusNonFiniteInput     Status = 3 // NaN or infinity in the embeddings
	StatusModelNotFound      Status = 4 // the model file cannot be opened
	StatusModelInvalid       Status = 5 // malformed or inconsistent model
	StatusBackendUnavailable Status = 6 // the backend cannot run here
	StatusBackendFailure     Status = 7 // the backend failed while running
	StatusPanic              Status = 8 // an internal bug, caught at the C boundary
)

var statusNames = [...]string{
	"OK", "INVALID_ARGUMENT", "DIMENSION_MISMATCH", "NON_FINITE_INPUT", "MODEL_NOT_FOUND",
	"MODEL_INVALID", "BACKEND_UNAVAILABLE", "BACKEND_FAILURE", "PANIC",
}

// String returns the C name without its prefix, e.g. "DIMENSION_MISMATCH".
func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "UNKNOWN_STATUS"
}

// Error makes a Status usable as a sentinel with errors.Is. It is String, so that fmt prints a
// Status the same way whichever of the two it picks.
func (s Status) Error() string { return s.String() }

// Error is a failed call: its status and the library's message ("GEMMA_CYBER_STATUS_NAME: message").
// Get it with errors.As; errors.Is matches it against its Status.
type Error struct {
	// Status says what failed.
	Status Status
	// Message is the library's description of this failure.
	Message string
}

// Error returns the library's message.
func (e *Error) Error() string { return e.Message }

// Unwrap returns the status, which is what errors.Is compares against.
func (e *Error) Unwrap() error { return e.Status }

// newError makes an error for a failure found on the Go side, worded like the library's own.
func newError(status Status, message string) *Error {
	return &Error{Status: status, Message: "GEMMA_CYBER_STATUS_" + status.String() + ": " + message}
}
