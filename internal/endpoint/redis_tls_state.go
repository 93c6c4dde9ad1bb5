package endpoint

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"
)

// TLSState dials the server once more, completes the TLS handshake with the
// connection's own settings and hangs up, returning what was negotiated
// (version, cipher suite, the server's certificates). It speaks no Redis:
// the handshake alone tells what a connection of the mirror gets. An
// endpoint without TLS is an error.
func (r Redis) TLSState(ctx context.Context, timeout time.Duration) (tls.ConnectionState, error) {
	if !r.TLS() {
		return tls.ConnectionState{}, fmt.Errorf("redis %s: not a TLS connection", r.Addr())
	}
	if len(r.Option.InitAddress) == 0 {
		return tls.ConnectionState{}, fmt.Errorf("redis %s: no address to dial", r.Addr())
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addr := r.Option.InitAddress[0]
	cfg := r.Option.TLSConfig.Clone()
	if cfg.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg.ServerName = host
		}
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: DefaultDialTimeout}, Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, r.explain(err)
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState(), nil
}

// TLSState dials the first broker, completes the TLS handshake with the
// client's settings and hangs up, returning what was negotiated, as
// Redis.TLSState does. Brokers without TLS are an error.
func (k Kafka) TLSState(ctx context.Context, timeout time.Duration) (tls.ConnectionState, error) {
	if !k.TLS() {
		return tls.ConnectionState{}, fmt.Errorf("kafka %s: not a TLS connection", k)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addr := k.Brokers[0]
	cfg := k.tlsConfig.Clone()
	if cfg.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg.ServerName = host
		}
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: DefaultDialTimeout}, Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, k.Explain(err)
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState(), nil
}
