//! The pickle opcodes, each byte with Python's name for it, defined once.

/// Defines [`Opcode`], its byte and its name from one table.
macro_rules! opcodes {
    ($($variant:ident = $byte:literal $name:literal,)*) => {
        /// Every opcode of pickle protocols 0 to 5. The machine runs those a tensor checkpoint
        /// uses and refuses the rest by name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(super) enum Opcode {
            $($variant,)*
        }

        impl Opcode {
            /// The opcode written as `byte`, if any.
            pub(super) fn from_byte(byte: u8) -> Option<Opcode> {
                match byte {
                    $($byte => Some(Opcode::$variant),)*
                    _ => None,
                }
            }

            /// Python's name for it (`pickletools`), for messages.
            pub(super) fn name(self) -> &'static str {
                match self {
                    $(Opcode::$variant => $name,)*
                }
            }
        }
    };
}

opcodes! {
    // The stack, the memo and the frame.
    Mark = b'(' "MARK", Stop = b'.' "STOP", Pop = b'0' "POP", PopMark = b'1' "POP_MARK",
    Dup = b'2' "DUP", Proto = 0x80 "PROTO", Frame = 0x95 "FRAME", Memoize = 0x94 "MEMOIZE",
    // Memo access.
    Get = b'g' "GET", BinGet = b'h' "BINGET", LongBinGet = b'j' "LONG_BINGET", Put = b'p' "PUT",
    BinPut = b'q' "BINPUT", LongBinPut = b'r' "LONG_BINPUT",
    // Numbers.
    None = b'N' "NONE", NewTrue = 0x88 "NEWTRUE", NewFalse = 0x89 "NEWFALSE", Int = b'I' "INT",
    BinInt = b'J' "BININT", BinInt1 = b'K' "BININT1", BinInt2 = b'M' "BININT2", Long = b'L' "LONG",
    Long1 = 0x8a "LONG1", Long4 = 0x8b "LONG4", Float = b'F' "FLOAT", BinFloat = b'G' "BINFLOAT",
    // Text and bytes.
    String = b'S' "STRING", BinString = b'T' "BINSTRING", ShortBinString = b'U' "SHORT_BINSTRING",
    Unicode = b'V' "UNICODE", BinUnicode = b'X' "BINUNICODE",
    ShortBinUnicode = 0x8c "SHORT_BINUNICODE", BinUnicode8 = 0x8d "BINUNICODE8",
    BinBytes = b'B' "BINBYTES", ShortBinBytes = b'C' "SHORT_BINBYTES", BinBytes8 = 0x8e "BINBYTES8",
    ByteArray8 = 0x96 "BYTEARRAY8", NextBuffer = 0x97 "NEXT_BUFFER",
    ReadOnlyBuffer = 0x98 "READONLY_BUFFER",
    // Containers.
    EmptyDict = b'}' "EMPTY_DICT", Dict = b'd' "DICT", SetItem = b's' "SETITEM",
    SetItems = b'u' "SETITEMS", EmptyList = b']' "EMPTY_LIST", List = b'l' "LIST",
    Append = b'a' "APPEND", Appends = b'e' "APPENDS", EmptyTuple = b')' "EMPTY_TUPLE",
    Tuple = b't' "TUPLE", Tuple1 = 0x85 "TUPLE1", Tuple2 = 0x86 "TUPLE2", Tuple3 = 0x87 "TUPLE3",
    EmptySet = 0x8f "EMPTY_SET", AddItems = 0x90 "ADDITEMS", FrozenSet = 0x91 "FROZENSET",
    // Names, calls and objects.
    Global = b'c' "GLOBAL", StackGlobal = 0x93 "STACK_GLOBAL", Reduce = b'R' "REDUCE",
    Build = b'b' "BUILD", Inst = b'i' "INST", Obj = b'o' "OBJ", NewObj = 0x81 "NEWOBJ",
    NewObjEx = 0x92 "NEWOBJ_EX", PersId = b'P' "PERSID", BinPersId = b'Q' "BINPERSID",
    Ext1 = 0x82 "EXT1", Ext2 = 0x83 "EXT2", Ext4 = 0x84 "EXT4",
}
