//go:build !asan

package session_test

const asanBuild = false
