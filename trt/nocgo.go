//go:build !cgo

package trt

// demon's native shim needs cgo: build with CGO_ENABLED=1 and a C++17 compiler (g++).
var _ = demon_requires_cgo_set_CGO_ENABLED_1_and_install_g_plus_plus
