package cmd

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"

	"github.com/spf13/cobra"
)

// profileFlags are hidden flags for measuring xmirror itself with pprof, as
// rclone's --cpuprofile and --memprofile.
type profileFlags struct {
	cpu string
	mem string
}

func (p *profileFlags) bind(root *cobra.Command) {
	fs := root.PersistentFlags()
	fs.StringVar(&p.cpu, "cpuprofile", "", "write a CPU profile to this file (go tool pprof)")
	fs.StringVar(&p.mem, "memprofile", "", "write an allocation profile to this file when the command ends")
	fs.MarkHidden("cpuprofile")
	fs.MarkHidden("memprofile")
}

// start begins profiling; the returned function ends it and writes the
// files.
func (p *profileFlags) start() (stop func() error, err error) {
	var cpu *os.File
	if p.cpu != "" {
		if cpu, err = os.Create(p.cpu); err != nil {
			return nil, fmt.Errorf("--cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(cpu); err != nil {
			cpu.Close()
			return nil, fmt.Errorf("--cpuprofile: %w", err)
		}
	}
	return func() error {
		if cpu != nil {
			pprof.StopCPUProfile()
			cpu.Close()
		}
		if p.mem == "" {
			return nil
		}
		f, err := os.Create(p.mem)
		if err != nil {
			return fmt.Errorf("--memprofile: %w", err)
		}
		defer f.Close()
		runtime.GC()
		return pprof.Lookup("allocs").WriteTo(f, 0)
	}, nil
}
