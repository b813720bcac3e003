package session

import "os"

// PredictCostForTest exposes the admission estimate to tests.
func PredictCostForTest(m *Manager, frames int, stems bool) uint64 {
	return m.predictCost(frames, stems)
}

// TempDirForTest makes a directory for the shared test repository.
func TempDirForTest() (string, error) { return os.MkdirTemp("", "demon-session-test-") }

// StreamBytesForTest exposes the stream estimate to tests.
func StreamBytesForTest(m *Manager, frames int) uint64 { return streamBytes(m.cfg, frames) }
