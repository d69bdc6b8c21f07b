// Package workerproto owns both ends of the protocol between the server and
// a worker's agent: the framing, the bounds on everything a peer sends, the
// server's Conn (one call at a time, Call(ctx, ...)), the agent's AgentConn,
// and the dial-back handshake by which a worker started elsewhere connects
// to the server. No other package knows how the bytes are laid out.
//
// It must not decide anything about workers (which to start, when to kill
// one: a protocol violation is reported as ErrProtocol, and the caller
// kills) and it never trusts the agent: every length the agent states is
// checked against a limit below before anything is allocated for it, and
// memory then grows only as the bytes actually arrive.
//
// # Framing
//
// A stream of frames, in each direction. A frame is a protobuf message
// (package atoll.v1) prefixed by its length as a varint (protodelim), and,
// for the messages that say so, followed by raw bytes whose size the message
// states. The stream is the agent's stdin/stdout (pipes), or a connection
// the agent dialed back on, after the handshake.
//
// # Messages
//
//	direction        message                 raw bytes after it            bound
//	server → agent   WorkerCall              function_size + arguments_size   MaxCallHeaderBytes; sizes ≤ MaxPayloadBytes
//	agent → server   WorkerEvent.ready       none                          MaxEventBytes
//	agent → server   WorkerEvent.output      none (data inline)            MaxEventBytes
//	agent → server   WorkerEvent.value       size (the pickled value)      size ≤ MaxPayloadBytes
//	agent → server   WorkerEvent.yielded     size (a yielded value)        size ≤ MaxPayloadBytes
//	agent → server   WorkerEvent.result      none (exception inline)       MaxEventBytes
//	agent → server   WorkerEvent.failure     none                          MaxEventBytes
//
// The sequence: the agent sends ready once its runner is up (output may
// come before it, failure instead of it). Then, per call, the server sends
// one WorkerCall; the agent answers with any number of output and yielded
// events and exactly one of value, result or failure. A failure ends the agent. The
// server ends the session by closing its side; the agent then exits.
//
// # Dial-back handshake
//
// A worker started with `atoll worker --connect ADDR --token-file F` dials
// ADDR and writes HandshakeMagic, the token's length as a uvarint (at most
// MaxTokenBytes) and the token. The server answers one byte, handshakeOK
// or handshakeRefused, within HandshakeTimeout of the connection's start;
// after OK the connection carries the frames above. A token admits one
// connection, once: the Listener forgets it when it is used.
package workerproto
