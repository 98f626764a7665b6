package restartbench

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/seal"
	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/internal/store/sqlite"
	"github.com/conftrace/conftrace/policy"
)

// The store's layout as package enclave writes it, which the floor reads:
// its tables, the label of the key that seals a journal row's header (the
// row's data day), the header's size. A row is that header, then its
// body sealed under the data day's key (seal.Keyring). Should the
// enclave's layout change, the floor's rows stop opening and the run
// fails rather than measure something else.
const (
	tableKEK      = "kek"
	tableDayKeys  = "daykeys"
	tableJournal  = "journal"
	headerLabel   = "conftrace enclave journal header v1"
	headerSize    = 12 + 4 + 16
	journalFiller = 0
)

// floorBatch is how many rows the scan hands a worker at once, as the
// enclave's restore does.
const floorBatch = 64

// floor is what the floor measured.
type floor struct {
	elapsed, cpu, decrypt time.Duration
	records, filler       int
	bytes                 int64
}

// floorKeys are the keys a journal row opens with.
type floorKeys struct {
	header cipher.AEAD
	days   *seal.Keyring
}

// decryptSample is the most journal rows the decrypt floor opens from
// memory (128 MB): beyond, it is proportional to the rows.
const decryptSample = 1 << 15

// measureFloor reads the journal of the store in dir, sealed under key,
// and opens every row on GOMAXPROCS goroutines. The keys are read first,
// not timed: the restart reads them too, and they are a few records. Then
// it opens the first rows again, from memory, for the decrypt floor.
func measureFloor(ctx context.Context, dir string, key [seal.KeySize]byte) (*floor, error) {
	st, err := sqlite.Open(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("restartbench: floor: %w", err)
	}
	defer st.Close()
	keys, err := readKeys(ctx, st, key)
	if err != nil {
		return nil, err
	}
	runtime.GC()
	fl := &floor{}
	var sample []store.Record
	began, cpu := time.Now(), cpuTime()
	err = openAll(func(rows chan<- []store.Record) error {
		batch := make([]store.Record, 0, floorBatch)
		err := st.Scan(ctx, tableJournal, func(r store.Record) error {
			if len(sample) < decryptSample {
				sample = append(sample, r)
			}
			if batch = append(batch, r); len(batch) == floorBatch {
				rows <- batch
				batch = make([]store.Record, 0, floorBatch)
			}
			return nil
		})
		rows <- batch
		return err
	}, keys, fl)
	fl.elapsed, fl.cpu = time.Since(began), cpuTime()-cpu
	if err != nil {
		return nil, fmt.Errorf("restartbench: floor: %w", err)
	}
	if len(sample) == 0 {
		return nil, errors.New("restartbench: floor: no journal rows")
	}
	began = time.Now()
	err = openAll(func(rows chan<- []store.Record) error {
		for b := range slices.Chunk(sample, floorBatch) {
			rows <- b
		}
		return nil
	}, keys, &floor{})
	if err != nil {
		return nil, fmt.Errorf("restartbench: floor: %w", err)
	}
	fl.decrypt = time.Since(began) * time.Duration(fl.records) / time.Duration(len(sample))
	return fl, nil
}

// openAll opens, on GOMAXPROCS goroutines, the rows that feed sends them,
// and counts them in fl.
func openAll(feed func(chan<- []store.Record) error, keys *floorKeys, fl *floor) error {
	var records, filler, bytes atomic.Int64
	workers := runtime.GOMAXPROCS(0)
	batches := make(chan []store.Record, 2*workers)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			var failed error
			for batch := range batches {
				for i := 0; i < len(batch) && failed == nil; i++ {
					kind, err := keys.open(batch[i])
					failed = err
					records.Add(1)
					bytes.Add(int64(len(batch[i].Value)))
					if kind == journalFiller {
						filler.Add(1)
					}
				}
				// After a failure the batches are drained, not read, so
				// that the feed never blocks.
			}
			errs <- failed
		})
	}
	err := feed(batches)
	close(batches)
	wg.Wait()
	close(errs)
	for e := range errs {
		err = errors.Join(err, e)
	}
	fl.records, fl.filler, fl.bytes = int(records.Load()), int(filler.Load()), bytes.Load()
	return err
}

// readKeys unwraps the store's key-encryption key with the sealing key,
// derives the journal header's key from it and loads the day keys.
func readKeys(ctx context.Context, st store.Store, sealingKey [seal.KeySize]byte) (*floorKeys, error) {
	var kek [seal.KeySize]byte
	found := false
	err := st.Scan(ctx, tableKEK, func(r store.Record) error {
		if k, err := seal.UnwrapKEK(sealingKey, r.Value); err == nil {
			kek, found = k, true
		}
		return nil
	})
	if err != nil || !found {
		return nil, fmt.Errorf("restartbench: floor: no key-encryption key opens (%v)", err)
	}
	k := &floorKeys{}
	if k.days, err = seal.NewKeyring(kek); err != nil {
		return nil, fmt.Errorf("restartbench: floor: %w", err)
	}
	hk, err := hkdf.Key(sha256.New, kek[:], nil, headerLabel, 32)
	if err != nil {
		return nil, fmt.Errorf("restartbench: floor: %w", err)
	}
	b, err := aes.NewCipher(hk)
	if err != nil {
		return nil, fmt.Errorf("restartbench: floor: %w", err)
	}
	if k.header, err = cipher.NewGCM(b); err != nil {
		return nil, fmt.Errorf("restartbench: floor: %w", err)
	}
	err = st.Scan(ctx, tableDayKeys, func(r store.Record) error {
		return k.days.Load(r.Day, r.Value)
	})
	if err != nil {
		return nil, fmt.Errorf("restartbench: floor: %w", err)
	}
	return k, nil
}

// open opens a journal row's header and body and returns the row's kind.
func (k *floorKeys) open(r store.Record) (byte, error) {
	if len(r.Value) != policy.StoreRowBytes {
		return 0, fmt.Errorf("a journal row of %d bytes", len(r.Value))
	}
	hdr, err := k.header.Open(nil, r.Value[:12], r.Value[12:headerSize], r.Key)
	if err != nil || len(hdr) != 4 {
		return 0, errors.New("a journal row's header does not open")
	}
	body, err := k.days.Open(calendar.Day(binary.BigEndian.Uint32(hdr)), tableJournal, r.Key, r.Value[headerSize:])
	if err != nil {
		return 0, err
	}
	return body[0], nil
}
