package service

import "fmt"

// watch gives the operator's metrics what they read of the service: the
// replica's TEE and store kind, the bundle served, the index size at start
// (Maintain updates it). Without metrics it does nothing.
func (s *Service) watch(cfg Config) error {
	kind := "sqlite"
	if cfg.StoreURL != "" {
		kind = "postgres"
	}
	s.metrics.SetReplica(s.tee.TEE(), kind)
	s.metrics.SetIndexEntries(s.Enclave.IndexEntries())
	if err := s.metrics.WatchBundle(s.CurrentBundle); err != nil {
		return fmt.Errorf("service: metrics: %w", err)
	}
	return nil
}
