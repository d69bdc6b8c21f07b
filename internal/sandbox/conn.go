package sandbox

import (
	"errors"
	"io"
	"os"
	"sync"
)

// pipeConn joins the agent's stdout (read) and stdin (write) pipes.
type pipeConn struct {
	r, w         *os.File
	rOnce, wOnce sync.Once
	rErr, wErr   error
}

func (c *pipeConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *pipeConn) Write(p []byte) (int, error) { return c.w.Write(p) }

// Halves gives the two pipes themselves (workerproto.Halves), so that
// large payloads are spliced into and out of them.
func (c *pipeConn) Halves() (io.Reader, io.Writer) { return c.r, c.w }

// closeWrite ends the agent's stdin; reads may go on.
func (c *pipeConn) closeWrite() error {
	c.wOnce.Do(func() { c.wErr = c.w.Close() })
	return c.wErr
}

func (c *pipeConn) Close() error {
	c.rOnce.Do(func() { c.rErr = c.r.Close() })
	return errors.Join(c.rErr, c.closeWrite())
}

// stdioPipes makes the agent's stdin and stdout pipes: the child ends go to
// the runtime, the parent ends form the Conn.
type stdioPipes struct {
	childIn, childOut *os.File
	conn              *pipeConn
}

func newStdioPipes() (*stdioPipes, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	return &stdioPipes{childIn: inR, childOut: outW, conn: &pipeConn{r: outR, w: inW}}, nil
}

// closeChild drops the parent's copies of the child ends, so the Conn sees
// end of file when the agent exits.
func (p *stdioPipes) closeChild() {
	p.childIn.Close()
	p.childOut.Close()
}

func (p *stdioPipes) closeAll() {
	p.closeChild()
	p.conn.Close()
}
