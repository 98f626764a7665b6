package observerbench

import (
	"bytes"
	"context"
	"errors"
	"hash/maphash"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// RoundTrip is one outer HTTP request and its answer, as the host sees
// them on the network: sizes and times, never content.
type RoundTrip struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	Status int    `json:"status"`
	// RequestBytes and AnswerBytes are the bodies' sizes.
	RequestBytes int `json:"request_bytes"`
	AnswerBytes  int `json:"answer_bytes"`
	// Sent is when the request was handed to the connection, Done when
	// the answer's last byte was read (real time).
	Sent time.Time `json:"sent"`
	Done time.Time `json:"done"`
}

// recorder is one phone's network as the host sees it: an
// http.RoundTripper on a transport of its own (a phone has its own
// connections), which notes every request's and answer's size and when the
// answer completed, and counts the connections dialed and the bytes that
// crossed them.
type recorder struct {
	base  *http.Transport
	conns atomic.Int64
	out   atomic.Int64
	in    atomic.Int64

	mu    sync.Mutex
	trips []RoundTrip
}

func newRecorder() *recorder {
	r := &recorder{}
	var d net.Dialer
	r.base = &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			r.conns.Add(1)
			return &countingConn{Conn: c, r: r}, nil
		},
		MaxIdleConnsPerHost: 1,
	}
	return r
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	t := RoundTrip{Method: req.Method, Path: req.URL.Path, RequestBytes: int(req.ContentLength), Sent: time.Now()}
	resp, err := r.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	// The whole answer is read here, so that Done is when it completed.
	body, err := io.ReadAll(resp.Body)
	t.Done = time.Now()
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	t.Status, t.AnswerBytes = resp.StatusCode, len(body)
	resp.Body = io.NopCloser(bytes.NewReader(body))
	r.mu.Lock()
	r.trips = append(r.trips, t)
	r.mu.Unlock()
	return resp, nil
}

// wire is what crossed one phone's network during an exchange.
type wire struct {
	trips   []RoundTrip
	conns   int
	out, in int64
}

// begin drops the idle connection, as a phone that exchanges once a day
// holds none, and starts counting afresh.
func (r *recorder) begin() {
	r.base.CloseIdleConnections()
	r.conns.Store(0)
	r.out.Store(0)
	r.in.Store(0)
	r.mu.Lock()
	r.trips = nil
	r.mu.Unlock()
}

// end returns what crossed the network since begin and drops the
// connection.
func (r *recorder) end() wire {
	r.base.CloseIdleConnections()
	r.mu.Lock()
	defer r.mu.Unlock()
	return wire{trips: slices.Clone(r.trips), conns: int(r.conns.Load()), out: r.out.Load(), in: r.in.Load()}
}

type countingConn struct {
	net.Conn
	r *recorder
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.r.in.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.r.out.Add(int64(n))
	return n, err
}

// fileState is what the host knows of one file of the backend's
// directory: its size, when it was last modified (which catches a write
// of the same bytes) and a hash of each block of blockSize bytes (which
// tells how many bytes a write changed). A fast non-cryptographic hash is
// enough: the bytes are the backend's, not chosen to collide.
type fileState struct {
	size    int64
	modTime time.Time
	blocks  []uint64
}

// blockSize is the granularity at which changed bytes are counted:
// SQLite's page, the store's row.
const blockSize = 4096

func (a fileState) equal(b fileState) bool {
	return a.size == b.size && a.modTime.Equal(b.modTime) && slices.Equal(a.blocks, b.blocks)
}

// snapshot is the state of every file under a directory, by relative path.
type snapshot map[string]fileState

// hasher takes snapshots, reusing one buffer for the files' bytes.
type hasher struct {
	seed maphash.Seed
	buf  []byte
}

func newHasher() *hasher { return &hasher{seed: maphash.MakeSeed()} }

// snapshot reads every regular file under dir.
func (h *hasher) snapshot(dir string) (snapshot, error) {
	s := snapshot{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		// A file the store removed (a rollback journal) between the
		// listing and the read is simply gone.
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		st, err := h.read(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		s[filepath.ToSlash(rel)] = st
		return nil
	})
	return s, err
}

func (h *hasher) read(path string) (fileState, error) {
	f, err := os.Open(path)
	if err != nil {
		return fileState{}, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fileState{}, err
	}
	// Room for the whole file at once, and a byte to see its end.
	h.buf = slices.Grow(h.buf[:0], int(info.Size())+1)
	for {
		if len(h.buf) == cap(h.buf) {
			h.buf = append(h.buf, 0)[:len(h.buf)]
		}
		n, err := f.Read(h.buf[len(h.buf):cap(h.buf)])
		h.buf = h.buf[:len(h.buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return fileState{}, err
		}
	}
	st := fileState{size: int64(len(h.buf)), modTime: info.ModTime()}
	for off := 0; off < len(h.buf); off += blockSize {
		st.blocks = append(st.blocks, maphash.Bytes(h.seed, h.buf[off:min(off+blockSize, len(h.buf))]))
	}
	return st, nil
}

// changes returns the files created, removed or modified from s to after,
// sorted, how many bytes the directory grew by, and how many bytes of it
// changed (in whole blocks; a removed file's count as changed).
func (s snapshot) changes(after snapshot) (changed []string, growth, written int64) {
	for name, a := range after {
		b, ok := s[name]
		if !ok || !b.equal(a) {
			changed = append(changed, name)
		}
		growth += a.size - b.size
		for i, h := range a.blocks {
			if i >= len(b.blocks) || b.blocks[i] != h {
				written += int64(min(blockSize, int(a.size)-i*blockSize))
			}
		}
	}
	for name, b := range s {
		if _, ok := after[name]; !ok {
			changed = append(changed, name)
			growth -= b.size
			written += b.size
		}
	}
	slices.Sort(changed)
	return changed, growth, written
}
