package cli

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// SourceDateEpochEnv names the one timestamp of reproducible output.
const SourceDateEpochEnv = "SOURCE_DATE_EPOCH"

// sourceDateEpoch reads SOURCE_DATE_EPOCH, the only place kpaas does: the
// commands pass the time down in their libraries' options (bake.Epoch,
// osimage.Epoch, image.Time, toolchain.SourceDateEpoch, disk.WithTime),
// which never read the environment. ok is false when it is unset or
// empty; each command then keeps its library's default.
func sourceDateEpoch() (t time.Time, ok bool, err error) {
	v := os.Getenv(SourceDateEpochEnv)
	if v == "" {
		return time.Time{}, false, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, false, fmt.Errorf("%s=%q: want a whole number of seconds since 1970", SourceDateEpochEnv, v)
	}
	return time.Unix(n, 0).UTC(), true, nil
}
