package server

// ValidateRequest checks the field bounds of a request message as the gRPC
// edge does (ValidateRequests), for transports that decode requests
// themselves (internal/fastcall). The error names the field and its bound.
func ValidateRequest(msg any) error { return validateFields(msg) }
