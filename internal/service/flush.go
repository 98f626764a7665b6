package service

import (
	"context"
	"time"
)

// flushEvery is how often the service asks the enclave whether a journal
// flush is due. The policy's flush period is in seconds, so a check a
// second keeps flushes on their schedule.
const flushEvery = time.Second

// RunFlushes has the enclave make the journal flushes its clock says are
// due (see enclave.FlushDue), every flushEvery until ctx ends.
func (s *Service) RunFlushes(ctx context.Context) {
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.Enclave.FlushDue(ctx); err != nil {
				s.log.Error("journal flush", "err", err)
			}
		}
	}
}
