package tlsmgr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// Timing of Watch. A change is applied watchDebounce after the last event
// of a burst (an editor's save, a kubelet's swap, `cert import` then
// `cert enable`), and never later than watchMaxDelay after its first
// event, so a directory that never quiets down still gets its reloads.
const (
	watchDebounce = 200 * time.Millisecond
	watchMaxDelay = time.Second
	watchResync   = time.Minute
	warnEvery     = 24 * time.Hour
	maxLinkHops   = 40 // as Linux's ELOOP limit
)

// Watch reloads the material when its files change, until ctx ends; it
// then returns nil. It returns an error at once when the directories cannot
// be watched (no inotify instances left, a directory missing), so a caller
// knows hot reload is off. Run it in a goroutine of your own, once per
// Manager.
//
// Directories are watched, not files, because the ways certificates are
// replaced in practice replace directory entries: rename-into-place, and
// the atomic swap of a Kubernetes Secret volume, whose cert_file is a
// symbolic link through the ..data link to a timestamped directory that
// the kubelet replaces. Watched are the directories of cert_file,
// key_file, client_ca_file, backend_ca_file and crl_file, every directory
// holding a symbolic link met on the way to them (certbot's live/
// directory, a Secret's ..data), and in store mode the state directory
// (the active pointer `cert enable` rewrites) and its certs directory.
// The set is recomputed after each reload and every minute, so a link
// that now points elsewhere, or a directory that was recreated, is
// followed. While a directory is missing (deleted, a volume unmounted),
// its nearest existing ancestor is watched instead, so its re-creation
// is seen within about a second, not at the next minute's resync.
//
// After a burst of events (see watchDebounce) the files are read again;
// if their content is unchanged nothing happens, otherwise Reload's
// validation applies: new handshakes use the new material as soon as it
// is swapped in (within about a second of the change), established
// connections keep what they negotiated, and refused material is logged
// at ERROR and leaves the current material in force. Either way the
// OnReload hook (SetOnReload) is told. Writing a certificate and its key
// as two separate files may be seen half-done; that attempt is refused
// (key mismatch) and the next event, the second write, succeeds.
//
// Watch also repeats Warnings at WARN once a day.
func (m *Manager) Watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch certificate files: %w", err)
	}
	defer w.Close()
	if _, err := m.syncWatches(w, true); err != nil {
		return err
	}
	m.log.Info("watching certificate files for changes", zap.Strings("dirs", w.WatchList()))
	m.watchingOnce.Do(func() { close(m.watchingCh) })
	if m.watching != nil {
		m.watching()
	}

	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	resync := time.NewTicker(watchResync)
	defer resync.Stop()
	warn := time.NewTicker(warnEvery)
	defer warn.Stop()

	var first time.Time // first event of the pending burst; zero when none
	schedule := func() {
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		d := min(watchDebounce, max(first.Add(watchMaxDelay).Sub(now), 0))
		debounce.Reset(d)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("watch certificate files: watcher closed")
			}
			if ev.Op == fsnotify.Chmod {
				continue // permission or timestamp change only
			}
			schedule()
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("watch certificate files: watcher closed")
			}
			// Typically a queue overflow: events were lost, so look.
			m.log.Warn("certificate file watch reported an error; re-reading the files", zap.Error(err))
			schedule()
		case <-debounce.C:
			first = time.Time{}
			reloaded, _ := m.reloadIfChanged()
			if added, _ := m.syncWatches(w, false); added > 0 {
				// A directory came back (or a link now leads to a new
				// one): files written in it before its watch was in
				// place sent no event, so look once more.
				schedule()
			}
			if m.checked != nil {
				m.checked(reloaded)
			}
		case <-resync.C:
			if added, _ := m.syncWatches(w, false); added > 0 {
				schedule() // a directory came back: what is in it now?
			}
		case <-warn.C:
			m.logWarnings(m.cur.Load())
		}
	}
}

// watchDir is a directory Watch should watch; required ones must exist.
type watchDir struct {
	path     string
	required bool
}

// syncWatches makes w watch exactly the directories the configuration
// needs now. With strict, failing to watch a required directory is an
// error; otherwise failures are logged at DEBUG and retried at the next
// sync. It returns how many watches it added.
func (m *Manager) syncWatches(w *fsnotify.Watcher, strict bool) (int, error) {
	want := m.watchDirs()
	have := w.WatchList()
	added := 0
	for _, d := range want {
		if slices.Contains(have, d.path) {
			continue
		}
		if err := w.Add(d.path); err != nil {
			if strict && d.required {
				return added, fmt.Errorf("watch certificate files: directory %s: %w", d.path, err)
			}
			m.log.Debug("cannot watch directory yet", zap.String("dir", d.path), zap.Error(err))
			continue
		}
		added++
	}
	for _, h := range have {
		if !slices.ContainsFunc(want, func(d watchDir) bool { return d.path == h }) {
			_ = w.Remove(h)
		}
	}
	return added, nil
}

// watchDirs lists the directories to watch, resolved and deduplicated.
func (m *Manager) watchDirs() []watchDir {
	var out []watchDir
	add := func(p string, required bool) {
		if i := slices.IndexFunc(out, func(d watchDir) bool { return d.path == p }); i >= 0 {
			out[i].required = out[i].required || required
			return
		}
		out = append(out, watchDir{p, required})
	}
	files := []string{m.cfg.ClientCAFile, m.cfg.BackendCAFile, m.cfg.CRLFile}
	if m.cfg.CertFile != "" {
		files = append(files, m.cfg.CertFile, m.cfg.KeyFile)
	} else {
		add(resolveDir(m.cfg.StateDir), true)
		add(resolveDir(filepath.Join(m.cfg.StateDir, storeCertsDir)), true)
	}
	for _, f := range files {
		if f == "" {
			continue
		}
		abs, err := filepath.Abs(f)
		if err != nil {
			continue
		}
		add(resolveDir(filepath.Dir(abs)), true)
		for _, d := range linkDirs(abs) {
			add(d, false)
		}
	}
	// A directory that is missing now (deleted, a volume unmounted) cannot
	// be watched; its nearest existing ancestor is, so that the event of
	// its re-creation triggers a look instead of waiting for the resync.
	for _, d := range out {
		if _, err := os.Stat(d.path); err != nil {
			if a := existingAncestor(d.path); a != "" {
				add(a, false)
			}
		}
	}
	return out
}

// existingAncestor returns the nearest ancestor of dir that is an existing
// directory, or "" when there is none.
func existingAncestor(dir string) string {
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			return p
		}
		if p == filepath.Dir(p) {
			return ""
		}
	}
}

// resolveDir returns dir with symbolic links resolved, or dir as it is
// when that fails: inotify follows a link to a directory anyway, and the
// resolved name is what dedupes two spellings of one directory.
func resolveDir(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return dir
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		return r
	}
	return abs
}

// linkDirs resolves the absolute path component by component and returns,
// for every symbolic link met, the (resolved) directory that holds it,
// then the directory of the final file: the places where replacing a link
// or the file changes what path reads. Resolution stops at a missing
// component or after maxLinkHops links.
func linkDirs(path string) []string {
	var dirs []string
	resolved := string(filepath.Separator)
	todo := splitPath(path)
	for hops := 0; len(todo) > 0; {
		c := todo[0]
		todo = todo[1:]
		next := filepath.Join(resolved, c)
		fi, err := os.Lstat(next)
		if err != nil {
			return dirs
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			resolved = next
			continue
		}
		if hops++; hops > maxLinkHops {
			return dirs
		}
		dirs = append(dirs, resolved)
		target, err := os.Readlink(next)
		if err != nil {
			return dirs
		}
		if filepath.IsAbs(target) {
			resolved = string(filepath.Separator)
		}
		todo = append(splitPath(target), todo...)
	}
	return append(dirs, filepath.Dir(resolved))
}

func splitPath(p string) []string {
	var out []string
	for _, c := range strings.Split(filepath.ToSlash(p), "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}
