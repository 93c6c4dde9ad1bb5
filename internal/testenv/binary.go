package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildOut  []byte
)

// Binary builds the xmirror command once per test process and returns its
// path, for tests that must kill, signal or restart a real process.
func Binary(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "xmirror-test-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "xmirror")
		cmd := exec.Command("go", "build", "-o", binPath, "github.com/xmirror/xmirror/cmd/xmirror")
		buildOut, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		tb.Fatalf("build xmirror: %v\n%s", buildErr, buildOut)
	}
	return binPath
}
