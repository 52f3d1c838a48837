package zero

import "testing"

func TestIs(t *testing.T) {
	for n := 0; n < 20; n++ {
		b := make([]byte, n)
		if !Is(b) {
			t.Fatalf("Is(%d zero bytes) = false", n)
		}
		for i := range b {
			b[i] = 1
			if Is(b) {
				t.Fatalf("Is reports zero with byte %d of %d set", i, n)
			}
			b[i] = 0
		}
	}
}
