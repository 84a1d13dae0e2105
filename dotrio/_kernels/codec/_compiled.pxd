# The compiled codec's C-level interface: other Cython code can cimport
# encode, decode and copy and call them without Python dispatch. (The write
# coalescer does not: it uses whichever twin dotrio._kernels.codec selected.)
# The rules are documented in _pure.py.

cpdef bytes encode(object value)
cpdef object decode(object data)
cpdef object copy(object value, object passthrough=*)
