// The shim, compiled into the Go package through its unity file (BUILD-NOTES: cgo).
#include "../native/src/all.cc"
