// Package upgradetest opens data directories written by earlier releases
// with today's issuer (testdata/release0, see its README). A change to the
// on-disk format must keep these tests passing: that is the upgrade path
// docs/operating.md promises.
package upgradetest
