package cmd_test

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/xmirror/xmirror/internal/testenv"
)

// kafkaProxy stands between a client and the test broker and can freeze:
// it then stops forwarding in both directions without closing anything,
// which to the client is a broker that stalls. A broker advertises its own
// address in Metadata responses, and clients connect there to produce and
// fetch; the proxy rewrites those addresses to its own, so every
// connection of the client goes through it.
type kafkaProxy struct {
	t      *testing.T
	ln     net.Listener
	broker string
	host   string
	port   int32

	mu     sync.Mutex
	cond   *sync.Cond
	frozen bool
	closed bool
	// held counts the requests, by API key, read from clients while
	// frozen and not forwarded yet.
	held  map[int16]int
	conns []net.Conn
}

// startKafkaProxy listens on a free local port, forwarding to the first
// test broker, until the test ends.
func startKafkaProxy(t *testing.T) *kafkaProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	n, _ := strconv.Atoi(port)
	p := &kafkaProxy{t: t, ln: ln, broker: strings.Split(testenv.Brokers(), ",")[0], host: host, port: int32(n)}
	p.cond = sync.NewCond(&p.mu)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// addr is what a client takes as its broker list.
func (p *kafkaProxy) addr() string { return p.ln.Addr().String() }

// freeze stops all forwarding; thaw resumes it.
func (p *kafkaProxy) freeze() { p.set(true) }
func (p *kafkaProxy) thaw()   { p.set(false) }

func (p *kafkaProxy) set(frozen bool) {
	p.mu.Lock()
	p.frozen = frozen
	p.mu.Unlock()
	p.cond.Broadcast()
}

// hold counts a request of API key waiting at the gate (+1) or let
// through (-1).
func (p *kafkaProxy) hold(key int16, d int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen || d < 0 {
		if p.held == nil {
			p.held = map[int16]int{}
		}
		p.held[key] += d
		if p.held[key] < 0 {
			p.held[key] = 0
		}
	}
}

// heldRequests is how many requests of API key are held at the gate.
func (p *kafkaProxy) heldRequests(key int16) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held[key]
}

// gate blocks while the proxy is frozen; false once it is closed.
func (p *kafkaProxy) gate() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.frozen && !p.closed {
		p.cond.Wait()
	}
	return !p.closed
}

func (p *kafkaProxy) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.mu.Unlock()
	p.cond.Broadcast()
	p.ln.Close()
	for _, c := range conns {
		c.Close()
	}
}

func (p *kafkaProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns = append(p.conns, c)
	return true
}

func (p *kafkaProxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.serve(client)
	}
}

// inflight is a request whose response is on its way back.
type inflight struct {
	key, version int16
}

func (p *kafkaProxy) serve(client net.Conn) {
	if !p.track(client) || !p.gate() {
		return
	}
	broker, err := net.Dial("tcp", p.broker)
	if err != nil {
		client.Close()
		return
	}
	if !p.track(broker) {
		client.Close()
		return
	}
	var mu sync.Mutex
	asked := map[int32]inflight{} // by correlation ID
	go func() {
		defer broker.Close()
		for {
			frame, err := readFrame(client)
			if err != nil || len(frame) < 8 {
				return
			}
			key := int16(binary.BigEndian.Uint16(frame[0:]))
			p.hold(key, 1)
			ok := p.gate()
			p.hold(key, -1)
			if !ok {
				return
			}
			version := int16(binary.BigEndian.Uint16(frame[2:]))
			corr := int32(binary.BigEndian.Uint32(frame[4:]))
			mu.Lock()
			asked[corr] = inflight{key, version}
			mu.Unlock()
			if writeFrame(broker, frame) != nil {
				return
			}
		}
	}()
	defer client.Close()
	for {
		frame, err := readFrame(broker)
		if err != nil || len(frame) < 4 || !p.gate() {
			return
		}
		corr := int32(binary.BigEndian.Uint32(frame))
		mu.Lock()
		req, ok := asked[corr]
		delete(asked, corr)
		mu.Unlock()
		if ok && req.key == (&kmsg.MetadataRequest{}).Key() {
			if frame, err = p.rewriteMetadata(frame, req.version); err != nil {
				p.t.Errorf("kafka proxy: %v", err)
				return
			}
		}
		if writeFrame(client, frame) != nil {
			return
		}
	}
}

// rewriteMetadata points every broker of a Metadata response at the proxy.
func (p *kafkaProxy) rewriteMetadata(frame []byte, version int16) ([]byte, error) {
	resp := kmsg.NewPtrMetadataResponse()
	resp.SetVersion(version)
	header := 4 // the correlation ID
	if resp.IsFlexible() {
		// The response header's tagged fields: xmirror's brokers send
		// none, a count of zero.
		if len(frame) < 5 || frame[4] != 0 {
			return nil, errors.New("metadata response header with tagged fields")
		}
		header++
	}
	if err := resp.ReadFrom(frame[header:]); err != nil {
		return nil, err
	}
	for i := range resp.Brokers {
		resp.Brokers[i].Host, resp.Brokers[i].Port = p.host, p.port
	}
	return resp.AppendTo(append([]byte(nil), frame[:header]...)), nil
}

func readFrame(r io.Reader) ([]byte, error) {
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n > 256<<20 {
		return nil, errors.New("frame too large")
	}
	frame := make([]byte, n)
	_, err := io.ReadFull(r, frame)
	return frame, err
}

func writeFrame(w io.Writer, frame []byte) error {
	buf := make([]byte, 4, 4+len(frame))
	binary.BigEndian.PutUint32(buf, uint32(len(frame)))
	_, err := w.Write(append(buf, frame...))
	return err
}
