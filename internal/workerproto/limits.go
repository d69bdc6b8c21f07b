package workerproto

import (
	"math"
	"time"
)

const (
	// MaxPayloadBytes bounds a call's function plus arguments and a
	// returned value: what one gRPC message to or from the caller can hold.
	MaxPayloadBytes = math.MaxInt32
	// MaxEventBytes bounds one WorkerEvent message. A raised exception
	// travels inline (pickled, with its traceback), and it too must fit in
	// one message to the caller.
	MaxEventBytes = math.MaxInt32
	// MaxCallHeaderBytes bounds one WorkerCall message: a call id, two
	// sizes and the call's environment variables (its secrets).
	MaxCallHeaderBytes = 256 << 10
	// MaxTokenBytes bounds the token a dialing worker presents.
	MaxTokenBytes = 512
	// HandshakeTimeout bounds a dialing worker's handshake, from accept to
	// the server's answer.
	HandshakeTimeout = 10 * time.Second
	// MaxHandshakes bounds the handshakes in progress at once: a peer that
	// has not yet shown a token holds little.
	MaxHandshakes = 64

	// eagerBytes is what a stated length may have allocated at once;
	// beyond it, memory grows as the bytes arrive, so a length the peer
	// claims but never sends costs nothing.
	eagerBytes = 1 << 20
	// bufferBytes sizes the buffered reader and writer of each stream.
	bufferBytes = 64 << 10
)
