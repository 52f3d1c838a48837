package timeserver

import (
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"
)

// request is an SNTP client request (version 4, mode 3) with a transmit
// time, as systemd-timesyncd sends it.
func request(transmit uint64) []byte {
	b := make([]byte, 48)
	b[0] = 4<<3 | 3
	binary.BigEndian.PutUint64(b[40:], transmit)
	return b
}

func TestAnswer(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 500_000_000, time.UTC)
	resp, ok := Answer(request(0x1122334455667788), now)
	if !ok {
		t.Fatal("no answer to a client request")
	}
	if li, vn, mode := resp[0]>>6, (resp[0]>>3)&7, resp[0]&7; li != 0 || vn != 4 || mode != 4 {
		t.Errorf("LI %d VN %d mode %d, want 0 4 4", li, vn, mode)
	}
	if resp[1] != Stratum {
		t.Errorf("stratum %d", resp[1])
	}
	if got := binary.BigEndian.Uint64(resp[24:]); got != 0x1122334455667788 {
		t.Errorf("originate %#x, want the client's transmit time", got)
	}
	tx := binary.BigEndian.Uint64(resp[40:])
	secs := int64(tx>>32) - ntpEpochOffset
	frac := float64(tx&0xffffffff) / (1 << 32)
	if secs != now.Unix() || frac < 0.49 || frac > 0.51 {
		t.Errorf("transmit %d + %.3f, want %d + 0.5", secs, frac, now.Unix())
	}
	for _, bad := range [][]byte{make([]byte, 47), func() []byte { b := request(1); b[0] = 4<<3 | 4; return b }(), func() []byte { b := request(1); b[0] = 0<<3 | 3; return b }()} {
		if _, ok := Answer(bad, now); ok {
			t.Errorf("answered %x", bad[:1])
		}
	}
}

// A client over UDP on 127.0.0.1 gets the server's time.
func TestServe(t *testing.T) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	fixed := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	go func() { done <- Serve(ctx, conn, func() time.Time { return fixed }) }()
	c, err := net.Dial("udp", conn.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(request(42)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	if err != nil || n != 48 {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	if secs := int64(binary.BigEndian.Uint64(buf[40:])>>32) - ntpEpochOffset; secs != fixed.Unix() {
		t.Errorf("transmit seconds %d, want %d", secs, fixed.Unix())
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}
