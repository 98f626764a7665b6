package httpserve

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// limitListener serves at most cap(slots) connections at once. At the cap,
// Accept holds the one connection it has taken until a slot frees, and
// takes no other, so further connections wait in the kernel's listen
// backlog (which the kernel bounds) instead of costing the server a
// goroutine and buffers each; they are served in turn.
//
// A connection idle between requests holds a slot for up to IdleTimeout,
// so when a new connection waits, idle ones are closed to make room, the
// one idle longest first: its client opens another when it needs one.
// Connections in the middle of a request are never closed for room; the
// read and write timeouts bound them.
type limitListener struct {
	net.Listener
	slots     chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	mu      sync.Mutex
	idle    map[*limitConn]time.Time // since when each idle connection is
	waiting bool                     // Accept is waiting for a slot
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{
		Listener: ln,
		slots:    make(chan struct{}, n),
		done:     make(chan struct{}),
		idle:     map[*limitConn]time.Time{},
	}
}

func (l *limitListener) Accept() (net.Conn, error) {
	// Accept first: only a connection that is there may close an idle one.
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if !l.acquire() {
		c.Close()
		return nil, net.ErrClosed
	}
	return &limitConn{Conn: c, l: l}, nil
}

// acquire takes a slot for a connection that waits, making room by closing
// an idle connection if there is none, and waits if all connections are
// busy. It reports false if the listener was closed first.
func (l *limitListener) acquire() bool {
	select {
	case <-l.done:
		return false
	case l.slots <- struct{}{}:
		return true
	default:
	}
	l.mu.Lock()
	l.waiting = true
	victim := l.idlestLocked()
	l.mu.Unlock()
	if victim != nil {
		victim.Close()
	}
	defer func() {
		l.mu.Lock()
		l.waiting = false
		l.mu.Unlock()
	}()
	select {
	case <-l.done:
		return false
	case l.slots <- struct{}{}:
		return true
	}
}

// idlestLocked removes and returns the connection idle the longest, or nil.
func (l *limitListener) idlestLocked() *limitConn {
	var oldest *limitConn
	var since time.Time
	for c, t := range l.idle {
		if oldest == nil || t.Before(since) {
			oldest, since = c, t
		}
	}
	delete(l.idle, oldest)
	return oldest
}

// connState tracks idle connections for http.Server.ConnState. A
// connection that goes idle while Accept waits for a slot is closed at
// once: a waiting client has a request, the idle one may never send one.
func (l *limitListener) connState(c net.Conn, s http.ConnState) {
	lc, ok := c.(*limitConn)
	if !ok {
		return
	}
	l.mu.Lock()
	if s != http.StateIdle {
		delete(l.idle, lc)
		l.mu.Unlock()
		return
	}
	if l.waiting {
		l.mu.Unlock()
		lc.Close()
		return
	}
	l.idle[lc] = time.Now()
	l.mu.Unlock()
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitConn gives its slot back when it is first closed.
type limitConn struct {
	net.Conn
	l       *limitListener
	release sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.release.Do(func() { <-c.l.slots })
	return err
}
