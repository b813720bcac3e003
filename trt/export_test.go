package trt

import "time"

// SetMaxHang shortens the cap on a Go-side "hang" for a test; it returns the restore.
func SetMaxHang(d time.Duration) (restore func()) {
	old := maxHang
	maxHang = d
	return func() { maxHang = old }
}
