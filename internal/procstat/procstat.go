// Package procstat reads this process's resource figures from Linux /proc, for the
// benchmark harness and the load tests that report them (zero where unavailable).
package procstat

import (
	"os"
	"strconv"
	"strings"
)

// RSSBytes is the resident set size, from /proc/self/statm.
func RSSBytes() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

// OpenFDs counts the open file descriptors (/proc/self/fd, minus the one reading it holds).
func OpenFDs() int {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return 0
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return 0
	}
	return len(names) - 1
}
