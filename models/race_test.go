//go:build race

package models_test

// The race detector's runtime keeps shadow memory and its own allocator, which make process
// RSS several times noisier; memory bounds that read RSS widen under it.
const raceEnabled = true
