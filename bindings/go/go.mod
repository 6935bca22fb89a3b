module github.com/gemma-cyber/gemma-cyber/bindings/go

go 1.22
