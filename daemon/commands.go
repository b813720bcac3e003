package daemon

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/demon-audio/demon/models"
	"github.com/demon-audio/demon/trt"
)

// subcommand runs `demond version` and `demond models ...`; ok is false when args do not
// name a subcommand (then the daemon runs).
func subcommand(args []string, stdout, stderr io.Writer) (code int, ok bool) {
	if len(args) == 0 {
		return 0, false
	}
	switch args[0] {
	case "version":
		fmt.Fprintf(stdout, "demond %s (shim %s)\n", buildVersion(), trt.Version())
		return 0, true
	case "models":
		return modelsCommand(args[1:], stdout, stderr), true
	}
	return 0, false
}

const modelsUsage = `usage:
  demond models build-reference --out DIR [--profile NAME:SECONDS:VARIANT]... [--footprints realistic|actual] [--seed N]
  demond models check --models DIR [--profile NAME]

build-reference writes a reference model repository (CPU reference engines with their
metadata sidecars). VARIANT is tiny-dit (a small real DiT) or oracle (closed-form, exact).
check validates every engine of a profile (files, sidecars, checksums, contracts) without
loading anything.
`

func modelsCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, modelsUsage)
		return 2
	}
	switch args[0] {
	case "build-reference":
		fs := flag.NewFlagSet("demond models build-reference", flag.ContinueOnError)
		fs.SetOutput(stderr)
		out := fs.String("out", "", "directory to write the repository into")
		footprints := fs.String("footprints", "realistic", "declared device memory: realistic (a 24 GB card's figures) or actual")
		seed := fs.Uint64("seed", 0, "seed of the reference weights (0 = the default)")
		var profiles profileFlags
		fs.Var(&profiles, "profile", "NAME:SECONDS:VARIANT, repeatable (default ref-60s:60:tiny-dit)")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		if *out == "" {
			fmt.Fprintln(stderr, "demond models build-reference: --out is required")
			return 2
		}
		opts := models.BuildOptions{Profiles: profiles, Seed: *seed}
		switch *footprints {
		case "realistic":
			opts.Footprints = models.FootprintsRealistic
		case "actual":
			opts.Footprints = models.FootprintsActual
		default:
			fmt.Fprintf(stderr, "demond models build-reference: --footprints %q (want realistic or actual)\n", *footprints)
			return 2
		}
		repo, err := models.BuildReference(*out, opts)
		if err != nil {
			fmt.Fprintf(stderr, "demond models build-reference: %v\n", err)
			return 1
		}
		for _, p := range repo.Profiles() {
			fmt.Fprintf(stdout, "profile %s (%d s): %d engines in %s\n", p.Name, p.DurationS, len(p.Engines), repo.Root())
		}
		return 0
	case "check":
		fs := flag.NewFlagSet("demond models check", flag.ContinueOnError)
		fs.SetOutput(stderr)
		dir := fs.String("models", "", "repository directory")
		name := fs.String("profile", "", "profile (default: all)")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		repo, err := models.Open(*dir)
		if err != nil {
			fmt.Fprintf(stderr, "demond models check: %v\n", err)
			return 1
		}
		failed := false
		for _, p := range repo.Profiles() {
			if *name != "" && p.Name != *name {
				continue
			}
			if _, err := repo.Resolve(p, models.BackendSupport); err != nil {
				fmt.Fprintf(stdout, "FAIL %s: %v\n", p.Name, err)
				failed = true
				continue
			}
			fmt.Fprintf(stdout, "ok   %s (%d s)\n", p.Name, p.DurationS)
		}
		if failed {
			return 1
		}
		return 0
	}
	fmt.Fprint(stderr, modelsUsage)
	return 2
}

// profileFlags parses repeated NAME:SECONDS:VARIANT flags.
type profileFlags []models.ProfileSpec

func (p *profileFlags) String() string { return fmt.Sprint(*p) }

func (p *profileFlags) Set(v string) error {
	parts := strings.Split(v, ":")
	if len(parts) != 3 {
		return errors.New("want NAME:SECONDS:VARIANT, e.g. ref-60s:60:tiny-dit")
	}
	d, err := strconv.Atoi(parts[1])
	if err != nil || d < 1 || d > 240 {
		return fmt.Errorf("seconds %q outside 1..240", parts[1])
	}
	if parts[2] != "tiny-dit" && parts[2] != "oracle" {
		return fmt.Errorf("variant %q (want tiny-dit or oracle)", parts[2])
	}
	*p = append(*p, models.ProfileSpec{Name: parts[0], DurationS: d, DecoderVariant: parts[2]})
	return nil
}
