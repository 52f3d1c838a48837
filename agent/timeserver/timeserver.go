// Package timeserver is a minimal SNTP server (RFC 4330) that the first
// control plane runs when the site names no NTP servers: every other node
// follows its clock (systemd-timesyncd), so the cluster's clocks agree and
// TLS does not break on skew, even on a network without a time source.
//
// It serves the machine's own clock as stratum 10 (a local clock, as NTP
// servers in orphan mode do), answering client requests only.
package timeserver

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"time"
)

// Stratum is the stratum the server claims: a local, undisciplined clock.
const Stratum = 10

// ntpEpochOffset is the seconds from 1900-01-01 (NTP's era 0) to 1970.
const ntpEpochOffset = 2208988800

// Answer builds the reply to one request packet at time now, or returns
// false for packets that are not client requests (mode 3) of NTP version
// 1-4.
func Answer(req []byte, now time.Time) ([]byte, bool) {
	if len(req) < 48 {
		return nil, false
	}
	version := (req[0] >> 3) & 7
	mode := req[0] & 7
	if mode != 3 || version < 1 || version > 4 {
		return nil, false
	}
	resp := make([]byte, 48)
	resp[0] = 0<<6 | version<<3 | 4 // no leap warning, the client's version, server
	resp[1] = Stratum
	resp[2] = req[2] // poll
	resp[3] = 0xEC   // precision 2^-20 s
	// Root delay 0; root dispersion ~10 ms (16.16 fixed point).
	binary.BigEndian.PutUint32(resp[8:], 0x0000028F)
	copy(resp[12:16], "LOCL") // reference ID of a local clock
	ts := ntpTime(now)
	binary.BigEndian.PutUint64(resp[16:], ts) // reference time
	copy(resp[24:32], req[40:48])             // originate = the client's transmit time
	binary.BigEndian.PutUint64(resp[32:], ts) // receive
	binary.BigEndian.PutUint64(resp[40:], ts) // transmit
	return resp, true
}

// ntpTime is t as a 64-bit NTP timestamp.
func ntpTime(t time.Time) uint64 {
	secs := uint64(t.Unix() + ntpEpochOffset)
	frac := uint64(t.Nanosecond()) << 32 / 1e9
	return secs<<32 | frac
}

// Serve answers requests on conn until ctx ends.
func Serve(ctx context.Context, conn net.PacketConn, now func() time.Time) error {
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	buf := make([]byte, 512)
	for {
		n, addr, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			continue
		}
		if resp, ok := Answer(buf[:n], now()); ok {
			conn.WriteTo(resp, addr)
		}
	}
}
