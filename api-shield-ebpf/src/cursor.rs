//! The one bounds-checked cursor every header read goes through.

use crate::headers::Header;
use aya_ebpf::programs::XdpContext;
use core::{marker::PhantomData, mem::size_of};

/// The frame ended before the header being read.
pub struct Truncated;

/// Reads headers of the frame `ctx` holds; the references it returns live as long as the frame.
pub struct Cursor<'a> {
    pos: usize,
    end: usize,
    _frame: PhantomData<&'a XdpContext>,
}

impl<'a> Cursor<'a> {
    #[inline(always)]
    pub fn new(ctx: &'a XdpContext) -> Self {
        Self {
            pos: ctx.data(),
            end: ctx.data_end(),
            _frame: PhantomData,
        }
    }

    /// Returns the header at the cursor and moves past it. The single bounds check here is
    /// what the verifier needs for every access through the returned reference.
    #[inline(always)]
    pub fn take<T: Header>(&mut self) -> Result<&'a T, Truncated> {
        let at = self.pos;
        if at + size_of::<T>() > self.end {
            return Err(Truncated);
        }
        self.pos = at + size_of::<T>();
        // SAFETY: `at .. at + size_of::<T>()` lies inside the packet (checked above), and
        // `T: Header` promises alignment 1 and validity for any bit pattern (checked at compile
        // time where each header is declared), so any position and content is valid.
        Ok(unsafe { &*(at as *const T) })
    }

    /// Moves past `len` bytes of a variable-length header whose fixed part was already taken,
    /// refusing to move past the end of the frame.
    #[inline(always)]
    pub fn skip(&mut self, len: usize) -> Result<(), Truncated> {
        if self.pos + len > self.end {
            return Err(Truncated);
        }
        self.pos += len;
        Ok(())
    }
}
