package proxy

import (
	"sync"
	"time"
)

// maxDialogAge bounds how long a dialog whose BYE never came through
// umrouter is counted against its backend (least-calls, calls_active).
const maxDialogAge = 12 * time.Hour

// dialogTable counts established calls per backend server, by Call-ID.
// It is bookkeeping for balancing and metrics only: routing of in-dialog
// requests never depends on it (Record-Route carries what routing needs).
type dialogTable struct {
	mu sync.Mutex
	m  map[string]dialogEntry
}

type dialogEntry struct {
	backend *backendServer
	since   time.Time
}

func (d *dialogTable) init() { d.m = map[string]dialogEntry{} }

// open records an established call at b and reports the number of calls.
func (d *dialogTable) open(callID string, b *backendServer, now time.Time) (int, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.m[callID]; ok {
		return len(d.m), false
	}
	d.m[callID] = dialogEntry{backend: b, since: now}
	return len(d.m), true
}

// close forgets a call and returns its backend (nil if unknown).
func (d *dialogTable) close(callID string) (*backendServer, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.m[callID]
	if !ok {
		return nil, len(d.m)
	}
	delete(d.m, callID)
	return e.backend, len(d.m)
}

// expire forgets calls older than maxDialogAge and returns their backends.
func (d *dialogTable) expire(now time.Time) (stale []*backendServer, n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, e := range d.m {
		if now.Sub(e.since) > maxDialogAge {
			delete(d.m, id)
			stale = append(stale, e.backend)
		}
	}
	return stale, len(d.m)
}

func (d *dialogTable) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.m)
}
