package phases

import "syscall"

// maxRSSKiB is this process's peak resident memory in KiB.
func maxRSSKiB() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Maxrss // KiB on Linux
}
