module github.com/atrest/atrest

go 1.25.1

require (
	golang.org/x/crypto v0.45.0
	golang.org/x/sys v0.38.0
)
