// Command demond serves real-time generative-music sessions (see README.md).
package main

import (
	"os"

	"github.com/demon-audio/demon/daemon"
)

func main() { os.Exit(daemon.Main(os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)) }
